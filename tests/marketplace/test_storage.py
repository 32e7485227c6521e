"""Artifact storage: one behaviour, checked on the local disk and on an S3-compatible
bucket (a fake S3 on httpx's mock transport that checks Signature Version 4 as S3 does:
no network)."""

from __future__ import annotations

import hashlib
import hmac
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
    StorageUnavailable,
    build_storage,
)

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # the key of AWS's documentation examples


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode(), hashlib.sha256).digest()


def signature_is_valid(request: httpx.Request, *, access_key: str, secret: str) -> bool:
    """Recompute the request's SigV4 signature the way S3 checks it."""
    scheme, _, fields_text = request.headers.get("authorization", "").partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return False
    fields = dict(part.strip().split("=", 1) for part in fields_text.split(","))
    key_id, day, region, service, terminator = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    if (key_id, service, terminator) != (access_key, "s3", "aws4_request"):
        return False
    if not {"host", "x-amz-date", "x-amz-content-sha256"} <= set(signed):
        return False
    canonical = "\n".join(
        [
            request.method,
            request.url.raw_path.decode().partition("?")[0],
            request.url.query.decode(),
            "".join(f"{name}:{request.headers[name].strip()}\n" for name in signed),
            fields["SignedHeaders"],
            request.headers["x-amz-content-sha256"],
        ]
    )
    scope = f"{day}/{region}/{service}/{terminator}"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            request.headers["x-amz-date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    key = _hmac(f"AWS4{secret}".encode(), day)
    for part in (region, service, terminator):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["Signature"])


class FakeS3:
    """Objects in a dict; refuses requests not signed with its key and bodies that do
    not match the signed SHA-256, as S3 does."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.puts = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        if not signature_is_valid(request, access_key="AKIDTEST", secret=SECRET):
            return httpx.Response(403, text="SignatureDoesNotMatch")
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


def s3_storage(fake_s3: FakeS3, **overrides: str) -> S3Storage:
    """An S3Storage talking to ``fake_s3``; ``overrides`` replace its settings."""
    options = {
        "endpoint_url": "http://s3.test",
        "bucket": "artifacts",
        "region": "eu-central-1",
        "access_key_id": "AKIDTEST",
        "secret_access_key": SECRET,
        **overrides,
    }
    return S3Storage(**options, transport=httpx.MockTransport(fake_s3.handle))


@pytest.fixture
def fake_s3() -> FakeS3:
    return FakeS3()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path, fake_s3: FakeS3) -> ArtifactStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "artifacts")
    return s3_storage(fake_s3, prefix="tollway")


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


class TestS3Signing:
    async def test_a_store_that_does_not_know_the_secret_refuses_the_upload(
        self, fake_s3: FakeS3
    ) -> None:
        storage = s3_storage(fake_s3, secret_access_key="not the secret")
        with pytest.raises(StorageUnavailable):
            await storage.store(chunks(b"payload"), max_bytes=100)
        assert fake_s3.objects == {}

    async def test_objects_with_an_endpoint_port_and_prefix_are_signed_for_that_host(
        self, fake_s3: FakeS3
    ) -> None:
        storage = s3_storage(
            fake_s3,
            endpoint_url="http://minio.test:9000/",
            bucket="my-bucket",
            region="us-east-1",
            prefix="/team/artifacts/",
        )
        stored = await storage.store(chunks(b"payload"), max_bytes=100)
        assert list(fake_s3.objects) == [f"/my-bucket/team/artifacts/{stored.key}"]
        assert await read_all(storage, stored.key) == b"payload"


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
