"""Logging: one JSON object per line, with every configured secret (cdp.settings.Settings.secrets())
masked by its fingerprint.

Call sites never log tokens (they log `fingerprint(token)`); the redaction here is the second line of
defence, for third-party libraries (uvicorn, asyncio, hikari, botocore, mangum...), nested extras and
exception texts. There is one redaction, `Redactor`, applied by the formatter of the one handler on
the root logger: the record itself is never changed, so tracebacks stay (`exc_info`) and every other
handler sees the original. Redaction comes before truncation, so a cut never leaves half a secret
behind; a string that was cut before it reached the log (`text[:300]` at a call site) has a secret's
beginning at its end (or a secret's end at its start) masked too.

`cdp.entry.aws.observability` puts the same Redactor on powertools' formatter for the Lambdas.
"""

from __future__ import annotations

import base64
import json
import logging
import sys
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from cdp.domain.secrets import fingerprint

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
MIN_SECRET = 6  # shorter values are not treated as secrets (they would mask ordinary words)
MIN_EDGE = 8  # a cut-off piece of a secret this long at a string's end (or start) is masked too
MAX_FIELD_CHARS = 16_000  # each string of a log line, after redaction
NOISY = ("hikari", "aiohttp", "httpx", "httpcore", "uvicorn.access", "botocore", "boto3", "urllib3", "s3transfer")


def secret_forms(secret: str) -> list[str]:
    """The ways a secret shows up in text: itself, base64 (standard and URL-safe, padding optional),
    URL-encoded and JSON-escaped."""
    raw = secret.encode()
    forms = {secret, quote(secret, safe=""), json.dumps(secret)[1:-1],
             base64.b64encode(raw).decode().rstrip("="), base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    return [f for f in forms if len(f) >= MIN_SECRET]


class Redactor:
    """Replaces every secret (in each of its `secret_forms`) by its fingerprint, in text or in nested
    values (dicts, lists, tuples, sets)."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= MIN_SECRET}, key=len, reverse=True)
        forms: dict[str, str] = {}
        for secret in self.secrets:
            for form in secret_forms(secret):
                forms.setdefault(form, fingerprint(secret))
        # Longest first so a token containing another token is replaced whole.
        self._forms = sorted(forms.items(), key=lambda kv: len(kv[0]), reverse=True)
        # For the cut-off pieces: by last character, the lengths n of the secret's prefixes ending in
        # it; by first character, the lengths n of its suffixes starting with it (longest first).
        self._heads: list[tuple[str, dict[str, list[int]]]] = []
        self._tails: list[tuple[str, dict[str, list[int]]]] = []
        for secret in self.secrets:
            heads: dict[str, list[int]] = {}
            tails: dict[str, list[int]] = {}
            for n in range(len(secret) - 1, MIN_EDGE - 1, -1):
                heads.setdefault(secret[n - 1], []).append(n)
                tails.setdefault(secret[-n], []).append(n)
            self._heads.append((secret, heads))
            self._tails.append((secret, tails))

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        if not self._forms or not text:
            return text
        for form, fp in self._forms:
            if form in text:
                text = text.replace(form, fp)
        return self._edges(text)

    def _edges(self, text: str) -> str:
        """A secret cut by an earlier truncation: its beginning at the end of `text`, or its end at
        the start of `text`."""
        for secret, heads in self._heads:
            if not text:
                break
            n = next((n for n in heads.get(text[-1], ()) if text.endswith(secret[:n])), 0)
            if n:
                text = text[:-n] + fingerprint(secret) + "…"
        for secret, tails in self._tails:
            if not text:
                break
            n = next((n for n in tails.get(text[0], ()) if text.startswith(secret[-n:])), 0)
            if n:
                text = "…" + fingerprint(secret) + text[n:]
        return text

    def value(self, value: Any, _depth: int = 0) -> Any:
        """`value` with every string inside redacted; other objects by their redacted str()."""
        if isinstance(value, str):
            return self.text(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        if _depth > 20:
            return self.text(repr(value))
        if isinstance(value, dict):
            return {self.value(k, _depth + 1) if isinstance(k, str) else str(k): self.value(v, _depth + 1)
                    for k, v in value.items()}
        if isinstance(value, (list, tuple, set, frozenset)):
            return [self.value(v, _depth + 1) for v in value]
        if isinstance(value, (bytes, bytearray)):
            return self.text(bytes(value).decode("utf-8", "replace"))
        return self.text(str(value))


def truncate(value: Any, limit: int = MAX_FIELD_CHARS) -> Any:
    """Each string in `value` cut to `limit` characters (call after redaction, never before)."""
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"…[{len(value) - limit} more]"
    if isinstance(value, dict):
        return {k: truncate(v, limit) for k, v in value.items()}
    if isinstance(value, list):
        return [truncate(v, limit) for v in value]
    return value


# The process's redactor, set by configure(): for the few places that keep log text themselves
# (the /api/status error buffer).
_current = Redactor()


def redact(text: str) -> str:
    """`text` redacted with the secrets given to configure()."""
    return _current.text(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, every extra (nested values too), exc (the
    traceback). Everything is redacted, then truncated. The record is not changed."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def format(self, record: logging.LogRecord) -> str:
        try:
            msg = record.getMessage()
        except Exception:  # bad args: still one line, never a lost record
            msg = f"{record.msg!r} % {record.args!r}"
        entry: dict[str, Any] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + "Z",
                                 "level": record.levelname, "logger": record.name, "msg": msg}
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        entry = truncate(self.redactor.value(entry))
        return json.dumps(entry, ensure_ascii=False, default=lambda o: self.redactor.text(str(o)))


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter (powertools'): its whole output line redacted (nested extras and the
    traceback included, which the wrapped formatter still renders from the untouched record)."""

    def __init__(self, inner: logging.Formatter, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.text(self.inner.format(record))

    def __getattr__(self, name: str) -> Any:  # powertools' Logger calls methods of its formatter
        return getattr(self.inner, name)


def set_redactor(redactor: Redactor) -> None:
    global _current
    _current = redactor


def quiet_noisy(level: str) -> None:
    for noisy in NOISY:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def configure(level: str = "INFO", secrets: Iterable[str | None] = ()) -> None:
    """One handler on the root logger (stderr, JSON, redacted); every logger reaches it."""
    redactor = Redactor(secrets)
    set_redactor(redactor)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redactor))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level)
    # Libraries that bring their own handler (uvicorn's, hikari's) would print unredacted: theirs go.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "hikari", "mangum", "asyncio", "botocore"):
        lib = logging.getLogger(name)
        for h in list(lib.handlers):
            lib.removeHandler(h)
        lib.propagate = True
    quiet_noisy(level)
