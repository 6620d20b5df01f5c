"""Small helpers: snowflakes, timestamps, PNG bytes, errors."""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import struct
import time
import zlib

DISCORD_EPOCH_MS = 1420070400000


class SnowflakeGen:
    """Discord-format snowflakes: (ms since 2015) << 22 | worker << 17 | process << 12 | increment."""

    def __init__(self, worker: int = 1, process: int = 0) -> None:
        self._last = 0
        self._inc = 0
        self._wp = (worker & 0x1F) << 17 | (process & 0x1F) << 12

    def next(self) -> str:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        self._inc = (self._inc + 1) & 0xFFF
        sf = (ms << 22) | self._wp | self._inc
        if sf <= self._last:
            sf = self._last + 1
        self._last = sf
        return str(sf)


def snowflake_time(sf: str | int) -> float:
    return ((int(sf) >> 22) + DISCORD_EPOCH_MS) / 1000.0


def iso_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="microseconds")


def iso_from_ts(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat(timespec="microseconds")


def fingerprint(token: str | None) -> str | None:
    if token is None:
        return None
    return "REDACTED:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def tiny_png(r: int = 255, g: int = 0, b: int = 128) -> bytes:
    """A real, valid 1x1 RGB PNG."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    raw = b"\x00" + bytes([r, g, b])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict:
        b: dict = {"message": self.message, "code": self.code}
        if self.errors is not None:
            b["errors"] = self.errors
        return b


def form_error(field_path: list[str | int], code: str, message: str) -> ApiError:
    errors: dict = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(field_path):
        errors = {str(key): errors}
    return ApiError(400, 50035, "Invalid Form Body", errors)


def number_components(components: list) -> list:
    """Discord gives every component a numeric `id` (unique within the message) when none is set."""
    comps = copy.deepcopy(components)
    counter = [0]

    def walk(items: list) -> None:
        for c in items:
            if isinstance(c, dict):
                counter[0] += 1
                c.setdefault("id", counter[0])
                if isinstance(c.get("components"), list):
                    walk(c["components"])

    walk(comps)
    return comps
