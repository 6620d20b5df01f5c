"""Blob store port: keeps re-hosted images (Coze's pictures) after Discord forgets them.

Port: ``await store.put(data, content_type) -> url``. The URL is either absolute (an adapter that
knows its public address, e.g. S3/CloudFront) or a path starting with "/" that the API serves itself
and makes absolute with PUBLIC_BASE_URL (or the request's own base URL).

Adapters:
- LocalBlobStore: files in FILES_DIR named ``<32 random hex>.<ext>`` (128 unguessable bits), served by
  GET /files/{name} (cdp.api.images). Used by `cdp serve`.
- S3 adapter: added by the AWS issue in the marked section below, chosen in `make_blob_store`.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Protocol

from cdp.domain.images import IMAGE_TYPES
from cdp.settings import Settings

#: name of a stored blob: 32 lowercase hex + a known extension; nothing else is ever served.
BLOB_NAME = re.compile(r"^[0-9a-f]{32}\.(png|jpg|gif|webp)$")
_EXT_MIME = {ext: mime for mime, ext in IMAGE_TYPES.items()}


class BlobStore(Protocol):
    async def put(self, data: bytes, content_type: str) -> str:
        """Store `data`; return its URL (absolute, or a "/files/<name>" path served by the API)."""
        ...


class LocalBlobStore:
    """Files in a folder; the API serves them under /files/<name>."""

    url_prefix = "/files/"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    async def put(self, data: bytes, content_type: str) -> str:
        ext = IMAGE_TYPES.get(content_type.split(";")[0].strip().lower())
        if ext is None:
            raise ValueError(f"only images are stored here, not {content_type!r}")
        name = f"{secrets.token_hex(16)}.{ext}"
        await asyncio.to_thread(self._write, name, data)
        return self.url_prefix + name

    def _write(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.directory / name)  # atomic: a reader never sees half a file
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def locate(self, name: str) -> tuple[Path, str] | None:
        """(path, content type) of a stored blob, or None (also for any name we never make)."""
        if not BLOB_NAME.match(name):
            return None
        path = self.directory / name
        if not path.is_file():
            return None
        return path, _EXT_MIME[name.rsplit(".", 1)[1]]


# ------------------------------------------------------------------------------------------------
# S3 adapter (AWS issue): class S3BlobStore with `async def put(data, content_type) -> absolute URL`
# (public bucket/CloudFront URL or a long-lived presigned GET), selected below from its settings.
# ------------------------------------------------------------------------------------------------


def make_blob_store(settings: Settings) -> BlobStore:
    return LocalBlobStore(settings.FILES_DIR)
