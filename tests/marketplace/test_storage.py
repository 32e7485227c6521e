"""Artifact storage: one behaviour, checked on the local disk and on an S3-compatible
bucket (a fake S3 on httpx's mock transport: no network)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tollway.config import Settings
from tollway.errors import ConfigurationError
from tollway.marketplace.storage import (
    ArtifactEmpty,
    ArtifactStorage,
    ArtifactTooLarge,
    LocalStorage,
    S3Storage,
    build_storage,
)


class FakeS3:
    """Objects in a dict; refuses unsigned requests and bodies that do not match the
    declared SHA-256, as S3 does."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("AWS4-HMAC-SHA256 Credential=AKIDTEST/"):
            return httpx.Response(403)
        if "SignedHeaders=host;x-amz-content-sha256;x-amz-date" not in auth:
            return httpx.Response(403)
        path = request.url.path
        if request.method == "PUT":
            body = request.read()
            if hashlib.sha256(body).hexdigest() != request.headers["x-amz-content-sha256"]:
                return httpx.Response(400, text="XAmzContentSHA256Mismatch")
            self.objects[path] = body
            self.puts += 1
            return httpx.Response(200)
        if path not in self.objects:
            return httpx.Response(404)
        if request.method == "HEAD":
            return httpx.Response(200)
        return httpx.Response(200, content=self.objects[path])


@pytest.fixture
def fake_s3() -> FakeS3:
    return FakeS3()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, fake_s3: FakeS3) -> ArtifactStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "artifacts")
    return S3Storage(
        endpoint_url="http://s3.test",
        bucket="artifacts",
        region="eu-central-1",
        access_key_id="AKIDTEST",
        secret_access_key="secret",
        prefix="tollway",
        transport=httpx.MockTransport(fake_s3.handle),
    )


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read_all(storage: ArtifactStorage, key: str) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key)])


class TestArtifactStorage:
    async def test_an_artifact_is_stored_under_its_sha256_and_read_back(
        self, storage: ArtifactStorage
    ) -> None:
        stored = await storage.store(chunks(b"hello ", b"world"), max_bytes=100)
        digest = hashlib.sha256(b"hello world").hexdigest()
        assert (stored.sha256, stored.size_bytes) == (digest, 11)
        assert stored.key == f"sha256/{digest[:2]}/{digest}"
        assert await read_all(storage, stored.key) == b"hello world"

    async def test_identical_content_is_stored_once(
        self, storage: ArtifactStorage, fake_s3: FakeS3
    ) -> None:
        first = await storage.store(chunks(b"same"), max_bytes=100)
        second = await storage.store(chunks(b"sa", b"me"), max_bytes=100)
        assert first == second
        if isinstance(storage, S3Storage):
            assert fake_s3.puts == 1

    async def test_empty_and_oversized_input_is_refused(self, storage: ArtifactStorage) -> None:
        with pytest.raises(ArtifactEmpty):
            await storage.store(chunks(), max_bytes=100)
        with pytest.raises(ArtifactTooLarge):
            await storage.store(chunks(b"x" * 60, b"y" * 41), max_bytes=100)
        stored = await storage.store(chunks(b"x" * 100), max_bytes=100)
        assert stored.size_bytes == 100


class TestChoosingStorage:
    def test_local_storage_is_the_default(self, tmp_path: Path) -> None:
        storage = build_storage(Settings(env="test", data_dir=tmp_path))
        assert isinstance(storage, LocalStorage)
        assert storage.root == tmp_path / "artifacts"

    def test_s3_needs_its_settings(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigurationError, match="TOLLWAY_MARKETPLACE_S3_BUCKET"):
            build_storage(
                Settings(
                    env="test",
                    data_dir=tmp_path,
                    marketplace_storage="s3",
                    marketplace_s3_endpoint_url="http://s3.test",
                )
            )

    def test_s3_is_chosen_when_configured(self, tmp_path: Path) -> None:
        storage = build_storage(
            Settings(
                env="test",
                data_dir=tmp_path,
                marketplace_storage="s3",
                marketplace_s3_endpoint_url="http://s3.test",
                marketplace_s3_bucket="b",
                marketplace_s3_access_key_id="k",
                marketplace_s3_secret_access_key="s",
            )
        )
        assert isinstance(storage, S3Storage)
