"""Blob store adapters (port: cdp.ports.BlobStore): keep re-hosted images (Coze's pictures) after
Discord forgets them. `put` returns a path starting with "/" that the API serves itself and makes
absolute with PUBLIC_BASE_URL (or the request's own base URL).

- LocalBlobStore: files in FILES_DIR named ``<32 random hex>.<ext>`` (128 unguessable bits), served by
  GET /files/{name} (cdp.entry.api.images). Used by `cdp serve`.
- S3BlobStore: objects ``<32 random hex>.<ext>`` in the private bucket BLOB_BUCKET (AWS: a Lambda's
  disk is ephemeral), content type set; `put` returns the same "/files/<name>" path and the API serves
  GET /files/{name} by reading the object (the bucket itself is never public).
`make_blob_store` picks S3 when BLOB_BUCKET is set, else the local folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import tempfile
import threading
from pathlib import Path

from cdp.domain.images import IMAGE_TYPES
from cdp.ports import BlobStore, BlobStoreError
from cdp.settings import Settings, SettingsError

log = logging.getLogger("cdp.adapters.blobs")

#: name of a stored blob: 32 lowercase hex + a known extension; nothing else is ever served.
BLOB_NAME = re.compile(r"^[0-9a-f]{32}\.(png|jpg|gif|webp)$")
_EXT_MIME = {ext: mime for mime, ext in IMAGE_TYPES.items()}


def _new_name(content_type: str) -> str:
    ext = IMAGE_TYPES.get(content_type.split(";")[0].strip().lower())
    if ext is None:
        raise ValueError(f"only images are stored here, not {content_type!r}")
    return f"{secrets.token_hex(16)}.{ext}"


class LocalBlobStore:
    """Files in a folder; the API serves them under /files/<name>."""

    url_prefix = "/files/"

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    async def put(self, data: bytes, content_type: str) -> str:
        name = _new_name(content_type)
        await asyncio.to_thread(self._write, name, data)
        return self.url_prefix + name

    async def get(self, name: str) -> tuple[bytes, str] | None:
        hit = self.locate(name)
        if hit is None:
            return None
        path, mime = hit
        try:
            return await asyncio.to_thread(path.read_bytes), mime
        except FileNotFoundError:
            return None

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

    async def prune(self, older_than: float) -> int:
        """Delete stored blobs last written before `older_than` (epoch s); the S3 adapter has a
        lifecycle rule instead. Only names this store makes are touched."""
        return await asyncio.to_thread(self._prune, older_than)

    def _prune(self, older_than: float) -> int:
        removed = 0
        if not self.directory.is_dir():
            return 0
        for path in self.directory.iterdir():
            try:
                if BLOB_NAME.match(path.name) and path.stat().st_mtime < older_than:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass  # deleted meanwhile
        return removed

    def locate(self, name: str) -> tuple[Path, str] | None:
        """(path, content type) of a stored blob, or None (also for any name we never make)."""
        if not BLOB_NAME.match(name):
            return None
        path = self.directory / name
        if not path.is_file():
            return None
        return path, _EXT_MIME[name.rsplit(".", 1)[1]]


# ------------------------------------------------------------------------------------------------
# S3 adapter
# ------------------------------------------------------------------------------------------------
#: S3's bucket naming rules (general purpose buckets): 3-63 chars, lowercase letters, digits, dots, hyphens.
_BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*\.\.)(?!\d+\.\d+\.\d+\.\d+$)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = {"NoSuchKey", "404", "NotFound", "AccessDenied", "403"}


class S3BlobStore:
    """Objects in a private S3 bucket; the API serves them under /files/<name> (it reads the object).

    The boto3 client is created on first use (cold starts that never store an image skip it) and
    every call runs in a thread (boto3 is blocking). The endpoint comes from boto3's own
    configuration (AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3: moto, LocalStack, MinIO); the region from
    AWS_REGION / AWS_DEFAULT_REGION (cdp.settings), else boto3's own configuration.
    A missing key reads as None also when S3 answers 403: without s3:ListBucket (the functions only
    get Put/GetObject) that is how S3 reports a key that does not exist (expired by the lifecycle rule).
    """

    url_prefix = "/files/"

    async def prune(self, older_than: float) -> int:
        """Nothing to do: the bucket's lifecycle rule expires old objects (template.yaml)."""
        return 0

    def __init__(self, bucket: str, *, region: str | None = None, client=None) -> None:
        self.bucket = bucket
        self.region = region
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    # SigV4 also for presigned URLs (get_or_link): what every region accepts
                    config = Config(signature_version="s3v4", retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3,
                                    read_timeout=20, max_pool_connections=16, tcp_keepalive=True)
                    self._client = boto3.session.Session().client("s3", region_name=self.region, config=config)
        return self._client

    async def put(self, data: bytes, content_type: str) -> str:
        name = _new_name(content_type)
        mime = _EXT_MIME[name.rsplit(".", 1)[1]]
        try:
            await asyncio.to_thread(self._put, name, data, mime)
        except Exception as exc:  # noqa: BLE001 - botocore errors, connection errors
            log.warning("could not store an image in S3", extra={"bucket": self.bucket, "error": _describe(exc)})
            raise BlobStoreError(f"could not store the image in the S3 bucket ({_describe(exc)})") from None
        return self.url_prefix + name

    def _put(self, name: str, data: bytes, mime: str) -> None:
        self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=mime,
                               CacheControl="public, max-age=31536000, immutable")

    async def get(self, name: str) -> tuple[bytes, str] | None:
        if not BLOB_NAME.match(name):
            return None
        try:
            data = await asyncio.to_thread(self._get, name)
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) in _MISSING:
                return None
            log.warning("could not read an image from S3", extra={"bucket": self.bucket, "error": _describe(exc)})
            raise BlobStoreError(f"could not read the image from the S3 bucket ({_describe(exc)})") from None
        return data, _EXT_MIME[name.rsplit(".", 1)[1]]

    def _get(self, name: str) -> bytes:
        response = self.client.get_object(Bucket=self.bucket, Key=name)
        with response["Body"] as body:
            return body.read()

    #: larger objects are not returned through the Lambda body (6 MB buffered response, base64: ~4.5 MB)
    inline_limit: int = 4_000_000
    #: lifetime of the presigned GET URL a large object is redirected to
    link_seconds: int = 300

    async def get_or_link(self, name: str) -> tuple[bytes, str] | str | None:
        """Like `get`, but an object over `inline_limit` bytes comes back as a short-lived presigned GET
        URL (str) instead of its bytes: one GetObject either way, whose body is dropped unread if large.
        Presigning is local (the function's own credentials, s3:GetObject); no extra permission."""
        if not BLOB_NAME.match(name):
            return None
        try:
            got = await asyncio.to_thread(self._get_or_link, name)
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) in _MISSING:
                return None
            log.warning("could not read an image from S3", extra={"bucket": self.bucket, "error": _describe(exc)})
            raise BlobStoreError(f"could not read the image from the S3 bucket ({_describe(exc)})") from None
        return got if isinstance(got, str) else (got, _EXT_MIME[name.rsplit(".", 1)[1]])

    def _get_or_link(self, name: str) -> bytes | str:
        response = self.client.get_object(Bucket=self.bucket, Key=name)
        with response["Body"] as body:
            if int(response.get("ContentLength") or 0) <= self.inline_limit:
                return body.read()
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=self.link_seconds)


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str((response.get("Error") or {}).get("Code") or "")
    return ""


def _describe(exc: BaseException) -> str:
    """Short, secret-free description: the S3 error code, else the exception type."""
    return _error_code(exc) or type(exc).__name__


def make_blob_store(settings: Settings) -> BlobStore:
    """S3 when BLOB_BUCKET is set (AWS), else the local folder FILES_DIR (`cdp serve`)."""
    bucket = settings.BLOB_BUCKET.strip()
    if bucket:
        if not _BUCKET_NAME.match(bucket):
            problem = (f"BLOB_BUCKET: {bucket!r} is not an S3 bucket name (3-63 characters: lowercase "
                       "letters, digits, dots, hyphens)")
            raise SettingsError([problem])
        return S3BlobStore(bucket, region=settings.aws_region)
    return LocalBlobStore(settings.FILES_DIR)
