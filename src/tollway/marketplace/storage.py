"""Artifact storage, content-addressed by SHA-256.

:class:`ArtifactStorage` is the interface; :class:`LocalStorage` (the default) keeps
files under ``<data_dir>/artifacts/sha256/<2 hex>/<64 hex>``, :class:`S3Storage`
puts them in an S3-compatible bucket (AWS, MinIO, Ceph, R2) with requests signed by
botocore's Signature Version 4 signer (AWS's own) and sent with httpx. Identical
uploads share one object. An object whose version row was rolled back stays behind,
unreferenced; it is harmless and a later identical upload reuses it.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import quote

import anyio
import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tollway.config import Settings
from tollway.errors import ConfigurationError, PayloadTooLarge, ServiceUnavailable, Unprocessable

CHUNK_BYTES = 1024 * 1024


class ArtifactEmpty(Unprocessable):
    code = "artifact_empty"
    title = "Empty artifact"


class ArtifactTooLarge(PayloadTooLarge):
    code = "artifact_too_large"
    title = "Artifact too large"


class StorageUnavailable(ServiceUnavailable):
    code = "artifact_storage_unavailable"
    title = "Artifact storage unavailable"


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    key: str
    sha256: str
    size_bytes: int


class ArtifactStorage(Protocol):
    """Where artifacts live. Keys are ``sha256/<2 hex>/<64 hex>``."""

    name: str

    async def store(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredArtifact:
        """Consume ``chunks`` into storage, hashing as they come; refuse empty input
        (``artifact_empty``) and input over ``max_bytes`` (``artifact_too_large``)."""
        ...

    def read(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes, in chunks."""
        ...


def content_key(sha256: str) -> str:
    return f"sha256/{sha256[:2]}/{sha256}"


async def _spool(
    chunks: AsyncIterator[bytes], handle: IO[bytes], *, max_bytes: int
) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > max_bytes:
            raise ArtifactTooLarge(
                f"an artifact may have at most {max_bytes} bytes", limit=max_bytes
            )
        digest.update(chunk)
        await anyio.to_thread.run_sync(handle.write, chunk)
    if size == 0:
        raise ArtifactEmpty("the artifact file is empty")
    return digest.hexdigest(), size


class LocalStorage:
    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    async def store(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredArtifact:
        incoming = self.root / "incoming"
        await anyio.to_thread.run_sync(lambda: incoming.mkdir(parents=True, exist_ok=True))
        fd, temp_name = tempfile.mkstemp(dir=incoming)
        try:
            with os.fdopen(fd, "wb") as handle:
                sha256, size = await _spool(chunks, handle, max_bytes=max_bytes)
                handle.flush()
                os.fsync(handle.fileno())
            key = content_key(sha256)
            await anyio.to_thread.run_sync(self._settle, Path(temp_name), self.root / key)
            return StoredArtifact(key=key, sha256=sha256, size_bytes=size)
        finally:
            await anyio.to_thread.run_sync(lambda: Path(temp_name).unlink(missing_ok=True))

    @staticmethod
    def _settle(temp: Path, target: Path) -> None:
        """Move the upload to its content address (an identical object may be there)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            temp.unlink()
        else:
            temp.replace(target)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self.root / key
        handle = await anyio.open_file(path, "rb")
        try:
            while chunk := await handle.read(CHUNK_BYTES):
                yield chunk
        finally:
            await handle.aclose()


class _KnownPayloadSigner(S3SigV4Auth):
    """S3's SigV4 signer, given the payload's SHA-256 instead of reading the body again:
    an upload is hashed once, while it is spooled, and that hash is what S3 checks."""

    def __init__(self, credentials: Credentials, region: str, payload_sha256: str) -> None:
        super().__init__(credentials, "s3", region)
        self._payload_sha256 = payload_sha256

    def payload(self, request: Any) -> str:
        return self._payload_sha256


_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Storage:
    """An S3-compatible bucket, addressed path-style (``<endpoint>/<bucket>/<key>``)."""

    name = "s3"

    def __init__(
        self,
        *,
        endpoint_url: str,
        bucket: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        prefix: str = "",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url.rstrip("/")
        self.bucket = bucket
        self.region = region
        self.prefix = prefix.strip("/")
        self._credentials = Credentials(access_key_id, secret_access_key)
        self._transport = transport

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=self._transport, timeout=60.0)

    def _url_path(self, key: str) -> str:
        full = f"{self.prefix}/{key}" if self.prefix else key
        return "/" + quote(self.bucket) + "/" + quote(full, safe="/")

    def _signed_headers(
        self, method: str, path: str, payload_sha256: str = _EMPTY_SHA256
    ) -> dict[str, str]:
        """The headers that sign one request (Signature Version 4, payload signed)."""
        request = AWSRequest(method=method, url=self.endpoint_url + path)
        _KnownPayloadSigner(self._credentials, self.region, payload_sha256).add_auth(request)
        return {
            name: value
            for name, value in request.headers.items()
            if name.lower() in ("authorization", "x-amz-date", "x-amz-content-sha256")
        }

    async def store(self, chunks: AsyncIterator[bytes], *, max_bytes: int) -> StoredArtifact:
        with tempfile.TemporaryFile() as handle:
            sha256, size = await _spool(chunks, handle, max_bytes=max_bytes)
            key = content_key(sha256)
            path = self._url_path(key)
            async with self._client() as client:
                head = await client.head(
                    self.endpoint_url + path,
                    headers=self._signed_headers("HEAD", path),
                )
                if head.status_code == 200:
                    return StoredArtifact(key=key, sha256=sha256, size_bytes=size)
                handle.seek(0)

                async def body() -> AsyncIterator[bytes]:
                    while chunk := await anyio.to_thread.run_sync(handle.read, CHUNK_BYTES):
                        yield chunk

                # The payload hash is the content hash: S3 refuses a corrupted upload.
                headers = self._signed_headers("PUT", path, sha256)
                headers["content-length"] = str(size)
                response = await client.put(
                    self.endpoint_url + path, headers=headers, content=body()
                )
            if response.status_code not in (200, 201):
                raise StorageUnavailable(
                    f"the artifact store answered {response.status_code} to the upload"
                )
            return StoredArtifact(key=key, sha256=sha256, size_bytes=size)

    async def read(self, key: str) -> AsyncIterator[bytes]:
        path = self._url_path(key)
        headers = self._signed_headers("GET", path)
        async with (
            self._client() as client,
            client.stream("GET", self.endpoint_url + path, headers=headers) as response,
        ):
            if response.status_code != 200:
                raise StorageUnavailable(
                    f"the artifact store answered {response.status_code} to a download"
                )
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                yield chunk


def build_storage(settings: Settings) -> ArtifactStorage:
    """The storage the settings choose."""
    if settings.marketplace_storage == "local":
        return LocalStorage(settings.data_dir / "artifacts")
    missing = [
        name
        for name in (
            "marketplace_s3_endpoint_url",
            "marketplace_s3_bucket",
            "marketplace_s3_access_key_id",
            "marketplace_s3_secret_access_key",
        )
        if getattr(settings, name) is None
    ]
    if missing:
        raise ConfigurationError(
            "TOLLWAY_MARKETPLACE_STORAGE=s3 needs "
            + ", ".join(f"TOLLWAY_{name.upper()}" for name in missing)
        )
    assert settings.marketplace_s3_endpoint_url is not None
    assert settings.marketplace_s3_bucket is not None
    assert settings.marketplace_s3_access_key_id is not None
    assert settings.marketplace_s3_secret_access_key is not None
    return S3Storage(
        endpoint_url=settings.marketplace_s3_endpoint_url,
        bucket=settings.marketplace_s3_bucket,
        region=settings.marketplace_s3_region,
        access_key_id=settings.marketplace_s3_access_key_id,
        secret_access_key=settings.marketplace_s3_secret_access_key.get_secret_value(),
        prefix=settings.marketplace_s3_prefix,
    )
