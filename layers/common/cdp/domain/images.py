"""Images and files, pure rules: the drawing instruction, image URLs in a Coze reply, inline media
(``data:…;base64,`` image URLs and ``file`` parts) in chat messages, file-type sniffing and limits.

No I/O here: cdp.app.uploads uploads, cdp.adapters.media downloads, cdp.adapters.blobs stores, cdp.entry.api.images serves.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DRAW_INSTRUCTION",
    "IMAGE_TYPES",
    "InlineMedia",
    "MediaError",
    "MediaLimits",
    "Sniffed",
    "collect_inline_media",
    "decode_base64",
    "drawing_prompt",
    "extract_image_urls",
    "parse_data_url",
    "placeholder_url",
    "replace_media",
    "revised_prompt",
    "safe_filename",
    "sniff",
    "sniff_image",
]

#: Prefixed to the prompt of /v1/images/generations, as in the original (common.ImgGeneratePrompt,
#: v4.4.8+). The Go source writes "\\n" (a literal backslash-n); a real newline is what was meant.
DRAW_INSTRUCTION = (
    "Please adhere strictly to my instructions below for the drawing task. If I do not provide a "
    "specific directive for drawing, create an image that corresponds to the text I have provided:\n"
)


def drawing_prompt(prompt: str) -> str:
    """The text posted for an image request: the drawing instruction, then the caller's prompt."""
    return DRAW_INSTRUCTION + prompt.strip()


# --------------------------------------------------------------------------------------------
# image URLs in a reply

# Markdown links and images: [alt](url) / ![alt](url), optional <url> and "title". The original
# matches `]\((https?://\S+)\)`; `[^\s)>]` keeps two links on one line apart.
_MD_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?(https?://[^\s)>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_BARE_URL = re.compile(r"https?://[^\s)<>\]\"']+")


def extract_image_urls(text: str, image_urls: tuple[str, ...] | list[str] = ()) -> list[str]:
    """Every image URL of a reply, in order, without duplicates.

    Markdown links in the text first (as the original: any ``[..](http…)`` link, Coze's image
    plugins answer with them), then the message's embed images and attachments (`image_urls` of
    the ReplyView, which the listener took from embeds[].image/thumbnail and attachments[]).
    """
    urls = [m.group(1) for m in _MD_LINK.finditer(text or "")]
    urls += [u for u in image_urls if isinstance(u, str) and u.startswith(("http://", "https://"))]
    return list(dict.fromkeys(urls))


def revised_prompt(text: str, urls: list[str], fallback: str) -> str:
    """The reply's words without its image links (what the bot said about the picture), else `fallback`."""
    out = _MD_LINK.sub(lambda m: "" if m.group(1) in urls else m.group(0), text or "")
    for u in urls:
        out = out.replace(u, "")
    out = "\n".join(line.rstrip() for line in out.splitlines()).strip()
    out = re.sub(r"\n{3,}", "\n\n", out)
    return out or fallback


# --------------------------------------------------------------------------------------------
# sniffing


@dataclass(frozen=True)
class Sniffed:
    mime: str
    ext: str


IMAGE_TYPES = {
    "image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp",
}
_TEXT_EXT = {"txt": "text/plain", "md": "text/markdown", "markdown": "text/markdown", "csv": "text/csv",
             "tsv": "text/tab-separated-values", "json": "application/json", "xml": "application/xml",
             "html": "text/html", "htm": "text/html", "yaml": "application/yaml", "yml": "application/yaml",
             "log": "text/plain", "py": "text/x-python", "js": "text/javascript", "ts": "text/plain",
             "java": "text/plain", "go": "text/plain", "c": "text/plain", "cpp": "text/plain",
             "h": "text/plain", "rs": "text/plain", "sql": "text/plain", "sh": "text/plain",
             "ini": "text/plain", "toml": "text/plain", "rtf": "application/rtf"}
_TEXT_MIME = {"application/json", "application/xml", "application/yaml", "application/x-yaml",
              "application/rtf", "application/javascript", "application/x-ndjson"}
_OOXML = {"docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
          "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
          "odt": "application/vnd.oasis.opendocument.text",
          "ods": "application/vnd.oasis.opendocument.spreadsheet",
          "epub": "application/epub+zip"}
_OLE = {"doc": "application/msword", "xls": "application/vnd.ms-excel", "ppt": "application/vnd.ms-powerpoint"}
_MIME_EXT = {v: k for k, v in {**_OOXML, **_OLE}.items()}


def sniff_image(data: bytes) -> Sniffed | None:
    """PNG, JPEG, GIF or WebP by magic bytes (the types Discord previews and Coze's vision reads)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image/png", "png")
    if data.startswith(b"\xff\xd8\xff"):
        return Sniffed("image/jpeg", "jpg")
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return Sniffed("image/gif", "gif")
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return Sniffed("image/webp", "webp")
    return None


def _ext(filename: str | None) -> str:
    if not filename or "." not in filename:
        return ""
    return filename.rsplit(".", 1)[1].lower()


_CONTROL = bytes(c for c in range(32) if c not in (9, 10, 12, 13, 27)) + b"\x7f"


def _is_text(data: bytes) -> bool:
    if any(c in _CONTROL for c in data[:8192]):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def sniff(data: bytes, declared_mime: str | None = None, filename: str | None = None) -> Sniffed | None:
    """The type of an uploaded file, or None when it is not one we pass to Coze.

    Accepted: images (by magic), PDF (by magic), Office/OpenDocument files (zip or OLE magic plus a
    matching extension or declared type) and UTF-8 text (by extension or a text declared type).
    Executables, archives and other binaries are refused.
    """
    image = sniff_image(data)
    if image:
        return image
    ext = _ext(filename)
    mime = (declared_mime or "").split(";")[0].strip().lower()
    if data.startswith(b"%PDF-"):
        return Sniffed("application/pdf", "pdf")
    if data.startswith(b"PK\x03\x04"):
        kind = ext if ext in _OOXML else _MIME_EXT.get(mime, "")
        return Sniffed(_OOXML[kind], kind) if kind in _OOXML else None
    if data.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        kind = ext if ext in _OLE else _MIME_EXT.get(mime, "")
        return Sniffed(_OLE[kind], kind) if kind in _OLE else None
    if (ext in _TEXT_EXT or mime.startswith("text/") or mime in _TEXT_MIME) and _is_text(data):
        if ext in _TEXT_EXT:
            return Sniffed(_TEXT_EXT[ext], ext)
        return Sniffed(mime or "text/plain", "txt" if mime in ("", "text/plain") else _guess_text_ext(mime))
    return None


def _guess_text_ext(mime: str) -> str:
    for ext, m in _TEXT_EXT.items():
        if m == mime:
            return ext
    return "txt"


# --------------------------------------------------------------------------------------------
# data URLs / base64


class MediaError(ValueError):
    """Bad inline media in a request; `param` names the request field (for the OpenAI error)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


TOO_LARGE = "file_too_large"
_B64_WS = re.compile(r"\s+")


def decode_base64(text: str, max_bytes: int | None = None) -> bytes:
    """Strict standard base64 (whitespace ignored, missing padding tolerated; url-safe accepted).

    Raises MediaError("…not valid base64…") and refuses, before decoding, text whose decoded size
    would exceed `max_bytes` (MediaError with "too large").
    """
    s = _B64_WS.sub("", text)
    if not s:
        raise MediaError("the base64 data is empty")
    if max_bytes is not None and len(s) * 3 // 4 > max_bytes + 3:
        raise MediaError(f"too large: about {len(s) * 3 // 4} bytes (limit {max_bytes})")
    if "-" in s or "_" in s:
        s = s.replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError("the data is not valid base64") from None


_DATA_URL = re.compile(r"^data:([^,]*?),", re.IGNORECASE | re.DOTALL)


def parse_data_url(url: str, max_bytes: int | None = None) -> tuple[str | None, bytes]:
    """``data:<mime>[;params];base64,<data>`` -> (mime or None, decoded bytes). Raises MediaError."""
    m = _DATA_URL.match(url.strip())
    if not m:
        raise MediaError("a data URL must look like data:<type>;base64,<data>")
    header = [p.strip() for p in m.group(1).split(";")]
    if "base64" not in (p.lower() for p in header[1:]):
        raise MediaError("a data URL must be base64-encoded (data:<type>;base64,<data>)")
    mime = header[0].lower() or None
    return mime, decode_base64(url.strip()[m.end():], max_bytes)


# --------------------------------------------------------------------------------------------
# inline media in chat messages


@dataclass(frozen=True)
class MediaLimits:
    max_file_bytes: int = 10 * 1024 * 1024  # Discord's default upload limit per file
    max_total_bytes: int = 25 * 1024 * 1024  # per request
    max_files: int = 10  # Discord allows 10 attachments per message; more would need several posts


@dataclass(frozen=True)
class InlineMedia:
    """One data: image or file part to upload, already decoded and checked."""

    message_index: int
    part_index: int
    kind: str  # "image" | "file"
    filename: str
    content_type: str
    data: bytes

    @property
    def param(self) -> str:
        return f"messages[{self.message_index}].content[{self.part_index}]"


_IMAGE_PARTS = frozenset({"image_url", "input_image", "image"})
_FILE_PARTS = frozenset({"file", "input_file"})
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str | None, default_stem: str, ext: str) -> str:
    """A Discord-friendly file name: ASCII letters, digits, . _ - ; the sniffed extension enforced."""
    stem = _SAFE.sub("_", (name or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1]).strip("._")
    if "." in stem:
        stem = stem.rsplit(".", 1)[0]
    stem = (stem or default_stem)[:80]
    return f"{stem}.{ext}"


def _image_ref(part: dict) -> Any:
    ref = part.get("image_url", part.get("url"))
    return ref.get("url") if isinstance(ref, dict) else ref


def _file_fields(part: dict) -> dict:
    f = part.get("file")
    return f if isinstance(f, dict) else part  # input_file (Responses API) keeps them at top level


def _in_prompt(messages: list, all_dialog: bool) -> list[int]:
    """Indexes of the messages whose content makes the prompt (see cdp.domain.prompt.build_prompt)."""
    if all_dialog:
        return list(range(len(messages)))
    for i in range(len(messages) - 1, -1, -1):
        if isinstance(messages[i], dict) and messages[i].get("role") == "user":
            return [i]
    return []


def collect_inline_media(messages: list, all_dialog: bool, limits: MediaLimits) -> list[InlineMedia]:
    """Decode and check every inline image / file of the messages that make the prompt.

    https image URLs are left alone (passed on as text). Raises MediaError for: a URL that is
    neither http(s) nor data:, bad base64, a file over `max_file_bytes`, all files over
    `max_total_bytes`, more than `max_files`, a type we do not pass on, or a file_id (no Files API).
    """
    found: list[InlineMedia] = []
    total = 0
    if not isinstance(messages, list):
        return found
    for mi in _in_prompt(messages, all_dialog):
        content = messages[mi].get("content") if isinstance(messages[mi], dict) else None
        if not isinstance(content, list):
            continue
        for pi, part in enumerate(content):
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            param = f"messages[{mi}].content[{pi}]"
            if not isinstance(kind, str):  # {} or [] (not hashable): not an image or a file part
                continue
            if kind in _IMAGE_PARTS:
                item = _image_item(part, mi, pi, param, limits)
            elif kind in _FILE_PARTS:
                item = _file_item(part, mi, pi, param, limits)
            else:
                continue
            if item is None:
                continue
            found.append(item)
            total += len(item.data)
            if len(found) > limits.max_files:
                raise MediaError(f"too many inline images and files: at most {limits.max_files} per request",
                                 param)
            if total > limits.max_total_bytes:
                raise MediaError(f"the inline images and files total {total} bytes, over the limit of "
                                 f"{limits.max_total_bytes} bytes per request", param, TOO_LARGE)
    return found


def _check_size(data: bytes, what: str, param: str, limits: MediaLimits) -> None:
    if len(data) > limits.max_file_bytes:
        raise MediaError(f"{what} is {len(data)} bytes, over the limit of {limits.max_file_bytes} bytes "
                         "(Discord's upload limit)", param, TOO_LARGE)


def _decode(fn, *args, what: str, param: str, limits: MediaLimits) -> tuple[str | None, bytes] | bytes:
    try:
        return fn(*args, limits.max_file_bytes)
    except MediaError as exc:
        if exc.message.startswith("too large"):
            raise MediaError(f"{what} is {exc.message.removeprefix('too large: ')}; the limit is "
                             f"{limits.max_file_bytes} bytes (Discord's upload limit)", param, TOO_LARGE) from None
        raise MediaError(f"{what}: {exc.message}", param) from None


def _image_item(part: dict, mi: int, pi: int, param: str, limits: MediaLimits) -> InlineMedia | None:
    url = _image_ref(part)
    if not isinstance(url, str) or not url.strip():
        raise MediaError("image_url.url must be a non-empty string", f"{param}.image_url.url")
    url = url.strip()
    if url[:5].lower() != "data:":
        if re.match(r"^https?://\S+$", url, re.IGNORECASE):
            return None  # passed on as text
        raise MediaError("image_url.url must be an http(s) URL or a data:image/...;base64,... URL",
                         f"{param}.image_url.url")
    what = "the image"
    mime, data = _decode(parse_data_url, url, what=what, param=f"{param}.image_url.url", limits=limits)
    _check_size(data, what, f"{param}.image_url.url", limits)
    found = sniff_image(data)
    if found is None:
        raise MediaError(f"the image is not a PNG, JPEG, GIF or WebP image (declared {mime or 'no type'})",
                         f"{param}.image_url.url")
    return InlineMedia(mi, pi, "image", safe_filename(None, f"image-{mi}-{pi}", found.ext), found.mime, data)


def _file_item(part: dict, mi: int, pi: int, param: str, limits: MediaLimits) -> InlineMedia | None:
    f = _file_fields(part)
    raw = f.get("file_data")
    filename = f.get("filename") if isinstance(f.get("filename"), str) else None
    if raw is None:
        if f.get("file_id"):
            raise MediaError("file_id is not supported (there is no Files API here); send the file inline "
                             "as file.file_data (a data URL or base64)", f"{param}.file.file_id")
        if isinstance(f.get("url") or f.get("file_url"), str):
            return None  # a URL: passed on as text
        raise MediaError("a file part needs file.file_data (a data URL or base64)", f"{param}.file")
    if not isinstance(raw, str) or not raw.strip():
        raise MediaError("file.file_data must be a non-empty string", f"{param}.file.file_data")
    what = f"the file {filename!r}" if filename else "the file"
    p = f"{param}.file.file_data"
    if raw.lstrip()[:5].lower() == "data:":
        mime, data = _decode(parse_data_url, raw, what=what, param=p, limits=limits)
    else:
        mime, data = None, _decode(decode_base64, raw, what=what, param=p, limits=limits)
    _check_size(data, what, p, limits)
    found = sniff(data, mime, filename)
    if found is None:
        raise MediaError(f"{what} has an unsupported type ({mime or _ext(filename) or 'unknown'}); send "
                         "images, PDF, Office documents or UTF-8 text", p)
    return InlineMedia(mi, pi, "file", safe_filename(filename, f"file-{mi}-{pi}", found.ext), found.mime, data)


def placeholder_url(item: InlineMedia) -> str:
    """As long as a real Discord attachment URL: lets the prompt be checked before anything is posted."""
    z = "0" * 19
    return (f"https://cdn.discordapp.com/attachments/{z}/{z}/{item.filename}"
            f"?ex=00000000&is=00000000&hm={'0' * 64}&")


def replace_media(messages: list, urls: dict[tuple[int, int], str]) -> list:
    """A copy of `messages` where each inline part at (message, part) points to its uploaded URL.

    Image parts become ``{"type": "image_url", "image_url": {"url": url}}``; file parts become
    ``{"type": "file", "file": {"url": url, "filename": ...}}`` (cdp.domain.prompt puts both URLs into
    the prompt text, each on its own line, after the text parts as the original did).
    """
    out = copy.copy(messages)
    for (mi, pi), url in urls.items():
        msg = dict(out[mi])
        content = list(msg["content"])
        part = content[pi]
        if part.get("type") in _IMAGE_PARTS:
            content[pi] = {"type": "image_url", "image_url": {"url": url}}
        else:
            f = _file_fields(part)
            content[pi] = {"type": "file", "file": {"url": url, "filename": f.get("filename")}}
        msg["content"] = content
        out[mi] = msg
    return out
