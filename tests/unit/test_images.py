"""cdp.domain.images: drawing prompt, image URLs of a reply, revised prompt, sniffing, base64."""

from __future__ import annotations

import base64

import pytest
from cdp.domain.images import (
    DRAW_INSTRUCTION,
    MediaError,
    decode_base64,
    drawing_prompt,
    extract_image_urls,
    parse_data_url,
    revised_prompt,
    safe_filename,
    sniff,
    sniff_image,
)
from cdp.sim.util import tiny_png

PNG = tiny_png()
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 20
GIF = b"GIF89a" + b"\x00" * 20
WEBP = b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 20


def test_drawing_prompt_is_the_originals_instruction_then_the_prompt():
    p = drawing_prompt("  a red fox  ")
    assert p.startswith("Please adhere strictly to my instructions below for the drawing task.")
    assert p == DRAW_INSTRUCTION + "a red fox"
    assert DRAW_INSTRUCTION.endswith(":\n")


def test_extract_markdown_links_then_embeds_and_attachments_deduplicated():
    text = ("Here you go ![a](https://cdn.x/1.png)![b](https://cdn.x/2.png) and "
            "[link](<https://cdn.x/3.webp> \"title\") plus plain https://not.md/4.png")
    urls = extract_image_urls(text, ("https://cdn.x/2.png", "https://media.discordapp.net/att/5.png", "ftp://no"))
    assert urls == ["https://cdn.x/1.png", "https://cdn.x/2.png", "https://cdn.x/3.webp",
                    "https://media.discordapp.net/att/5.png"]


def test_extract_nothing():
    assert extract_image_urls("I cannot draw that.", ()) == []
    assert extract_image_urls("", ()) == []


def test_revised_prompt_strips_image_links_and_falls_back():
    urls = ["https://cdn.x/1.png"]
    assert revised_prompt("A fox in snow.\n![image](https://cdn.x/1.png)", urls, "fb") == "A fox in snow."
    assert revised_prompt("![image](https://cdn.x/1.png)", urls, "the prompt") == "the prompt"
    assert revised_prompt("see [docs](https://d.x/) https://cdn.x/1.png", urls, "fb") == "see [docs](https://d.x/)"


@pytest.mark.parametrize("data,mime", [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"),
                                       (WEBP, "image/webp")])
def test_sniff_images(data, mime):
    assert sniff_image(data).mime == mime
    assert sniff(data, "application/octet-stream", "x.bin").mime == mime


def test_sniff_files():
    assert sniff(b"%PDF-1.7 ...", None, "a.pdf").ext == "pdf"
    assert sniff(b"PK\x03\x04rest", None, "report.docx").ext == "docx"
    assert sniff(b"PK\x03\x04rest", None, "archive.zip") is None  # plain archives are refused
    assert sniff("héllo, 你好".encode(), "text/plain", None).mime == "text/plain"
    assert sniff(b"a,b\n1,2\n", None, "t.csv").ext == "csv"
    assert sniff(b'{"a": 1}', "application/json", None).ext == "json"
    assert sniff(b"MZ\x90\x00\x03", None, "evil.exe") is None
    assert sniff(b"\x7fELF\x02\x01", "text/plain", "x.txt") is None  # binary in disguise
    assert sniff(b"\xff\xfe\x00\x00garbage", None, None) is None


def test_decode_base64_strict_and_tolerant():
    raw = bytes(range(256))
    enc = base64.b64encode(raw).decode()
    assert decode_base64(enc) == raw
    assert decode_base64("\n".join(enc[i:i + 76] for i in range(0, len(enc), 76))) == raw
    assert decode_base64(enc.rstrip("=")) == raw  # missing padding
    assert decode_base64(base64.urlsafe_b64encode(raw).decode()) == raw
    for bad in ["not base64 at all!", "@@@@", "", "   "]:
        with pytest.raises(MediaError):
            decode_base64(bad)


def test_decode_base64_refuses_oversize_before_decoding():
    with pytest.raises(MediaError, match="too large"):
        decode_base64("A" * 4000, max_bytes=1000)


def test_parse_data_url():
    mime, data = parse_data_url("data:image/png;base64," + base64.b64encode(PNG).decode())
    assert (mime, data) == ("image/png", PNG)
    mime, data = parse_data_url("data:;base64,AAAA")
    assert mime is None and data == b"\x00\x00\x00"
    with pytest.raises(MediaError, match="base64"):
        parse_data_url("data:text/plain,hello")
    with pytest.raises(MediaError):
        parse_data_url("https://example.com/x.png")


def test_safe_filename():
    assert safe_filename("../../etc/passwd", "file", "txt") == "passwd.txt"
    assert safe_filename("my report (final).docx", "file", "docx") == "my_report_final_.docx"
    assert safe_filename(None, "image-0-1", "png") == "image-0-1.png"
    assert safe_filename("photo.exe", "f", "png") == "photo.png"  # the sniffed extension wins


def test_the_fake_coze_recognises_our_drawing_instruction():
    from cdp.sim.coze import DRAW_MARKER, final_text

    assert DRAW_MARKER in DRAW_INSTRUCTION
    assert "![image](" in final_text(drawing_prompt("a boat"), "http://cdn")
