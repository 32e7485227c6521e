"""Downloads: checksums and Ed25519 signatures a client verifies, counts, buyers' access."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import FastAPI

from tests.marketplace.conftest import Org, act, publish, upload
from tollway.app import create_app
from tollway.config import Settings
from tollway.kit.clock import ManualClock
from tollway.kit.signing import b64url_decode, rotate_signing_key


def public_keys(body: dict[str, object]) -> dict[str, Ed25519PublicKey]:
    keys = body["keys"]
    assert isinstance(keys, list)
    return {key["kid"]: Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"])) for key in keys}


def stored_files(root: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in root.rglob("*") if path.is_file()}


def message(template: str, name: str, version: str, sha256: str) -> bytes:
    return template.format(name=name, version=version, sha256=sha256).encode()


async def fetch(client: httpx.AsyncClient, org: Org, name: str, version: str) -> httpx.Response:
    return await client.get(
        f"/api/v1/marketplace/packages/{name}/{version}/download", headers=org.headers
    )


class TestSignatures:
    async def test_the_signature_verifies_with_the_published_key_and_tampering_fails(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        content = b"\x1f\x8b template archive bytes \x00\xff" * 100
        await upload(client, author, "signed", "1.0.0", content=content, expect=404)
        await publish(client, author, "signed")
        await upload(client, author, "signed", "1.1.0", content=content, publish=True)
        await client.post("/api/v1/marketplace/packages/signed/purchase", headers=buyer.headers)
        response = await fetch(client, buyer, "signed", "1.1.0")
        assert response.status_code == 200
        assert response.content == content
        assert response.headers["content-type"] == "application/octet-stream"
        digest = hashlib.sha256(response.content).hexdigest()
        assert response.headers["X-Checksum-SHA256"] == digest

        key_doc = (await client.get("/api/v1/marketplace/signing-key")).json()
        assert key_doc["algorithm"] == "Ed25519"
        keys = public_keys(key_doc)
        public = keys[response.headers["X-Signature-Key-Id"]]
        signature = b64url_decode(response.headers["X-Signature-Ed25519"])
        public.verify(signature, message(key_doc["signed_message"], "signed", "1.1.0", digest))

        tampered = hashlib.sha256(response.content + b"!").hexdigest()
        with pytest.raises(InvalidSignature):
            public.verify(
                signature, message(key_doc["signed_message"], "signed", "1.1.0", tampered)
            )
        with pytest.raises(InvalidSignature):  # the same bytes under another version
            public.verify(signature, message(key_doc["signed_message"], "signed", "1.0.0", digest))

    async def test_signatures_keep_verifying_after_the_key_is_rotated(
        self, settings: Settings, clock: ManualClock, client: httpx.AsyncClient, author: Org
    ) -> None:
        before = await publish(client, author, "signed")
        rotate_signing_key(settings)
        rotated = create_app(settings, clock=clock)
        async with LifespanManager(rotated):
            transport = httpx.ASGITransport(app=rotated)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as other:
                after = await upload(other, author, "signed", "2.0.0", publish=True)
                key_doc = (await other.get("/api/v1/marketplace/signing-key")).json()
        keys = public_keys(key_doc)
        assert len(keys) == 2
        assert after["signature_kid"] != before["signature_kid"]
        for version in (before, after):
            keys[version["signature_kid"]].verify(
                b64url_decode(version["signature"]),
                message(key_doc["signed_message"], "signed", version["version"], version["sha256"]),
            )


class TestDownloads:
    async def test_downloads_are_counted_per_version_and_package(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "counted")
        await upload(client, author, "counted", "1.1.0", publish=True)
        await client.post("/api/v1/marketplace/packages/counted/purchase", headers=buyer.headers)
        for version in ("1.0.0", "1.1.0", "1.1.0"):
            assert (await fetch(client, buyer, "counted", version)).status_code == 200
        refused = await fetch(client, author, "counted", "9.0.0")
        assert refused.status_code == 404
        view = (await client.get("/api/v1/marketplace/packages/counted")).json()
        assert view["downloads"] == 3
        assert {v["version"]: v["downloads"] for v in view["versions"]} == {
            "1.1.0": 2,
            "1.0.0": 1,
        }

    async def test_buyers_keep_deprecated_and_yanked_versions(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "kept")
        await upload(client, author, "kept", "1.1.0", publish=True)
        await client.post("/api/v1/marketplace/packages/kept/purchase", headers=buyer.headers)
        await act(client, author, "kept", "1.0.0", "deprecate")
        await act(client, author, "kept", "1.1.0", "yank", reason="broken build")
        assert (await fetch(client, buyer, "kept", "1.0.0")).status_code == 200
        assert (await fetch(client, buyer, "kept", "1.1.0")).status_code == 200

    async def test_downloading_needs_credentials(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "kept")
        response = await client.get("/api/v1/marketplace/packages/kept/1.0.0/download")
        assert response.status_code == 401

    async def test_artifacts_are_stored_once_by_content(
        self, app: FastAPI, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "one")
        first = await upload(client, author, "one", "1.1.0", content=b"same bytes")
        second = await upload(client, author, "one", "1.2.0", content=b"same bytes")
        assert first["sha256"] == second["sha256"]
        root: Path = app.state.settings.data_dir / "artifacts" / "sha256"
        stored = stored_files(root)
        assert len(stored) == 2  # 1.0.0's bytes and the shared ones
        assert stored[root / first["sha256"][:2] / first["sha256"]] == b"same bytes"
