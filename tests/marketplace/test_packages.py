"""Packages and versions: creation, the lifecycle, and every refusal a publisher meets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.fixtures.identity import create_api_key
from tests.marketplace.conftest import (
    Org,
    act,
    create_package,
    publish,
    upload,
)
from tollway.kit.clock import ManualClock


async def package(client: httpx.AsyncClient, name: str, org: Org | None = None) -> httpx.Response:
    return await client.get(
        f"/api/v1/marketplace/packages/{name}", headers=org.headers if org else None
    )


class TestCreatingPackages:
    async def test_the_name_is_normalised_and_the_license_canonicalised(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        created = await create_package(
            client, author, "Flask_Login", license="mit OR apache-2.0", keywords=["Flask", "auth"]
        )
        assert created["name"] == "flask-login"
        assert created["license"] == "MIT OR Apache-2.0"
        assert created["keywords"] == ["flask", "auth"]
        assert created["free"] is True
        assert created["price"] is None
        assert created["author"] == {
            "organization_id": author.organization_id,
            "name": "Acme Templates",
        }
        assert created["listed"] is False

    async def test_a_name_taken_under_another_spelling_is_refused(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await create_package(client, author, "flask-login")
        refused = await create_package(client, buyer, "Flask.Login", expect=409)
        assert refused["code"] == "package_name_taken"

    async def test_bad_names_licenses_categories_and_currencies_are_refused(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"name": "-bad-"}, "invalid_package_name"),
            ({"name": "ok", "license": "Not A License"}, "invalid_license"),
            ({"name": "ok", "license": "LicenseRef-Acme"}, "invalid_license"),
            ({"name": "ok", "category": "Web Apps!"}, "invalid_category"),
            ({"name": "ok", "price": {"amount": 500, "currency": "$$$"}}, "invalid_currency"),
            ({"name": "ok", "price": {"amount": 500, "currency": "zzz"}}, "invalid_currency"),
            ({"name": "ok", "price": {"amount": 500, "currency": "usdx"}}, "invalid_currency"),
            ({"name": "ok", "keywords": ["<script>"]}, "invalid_keywords"),
        ]
        for overrides, code in cases:
            name = overrides.pop("name")
            refused = await create_package(client, author, name, expect=422, **overrides)
            assert refused["code"] == code, (overrides, refused)

    async def test_a_custom_license_is_allowed_for_a_paid_package(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        created = await create_package(
            client,
            author,
            "pro-kit",
            license="LicenseRef-Acme-Commercial",
            price={"amount": 1900, "currency": "USD"},
        )
        assert created["license"] == "LicenseRef-Acme-Commercial"
        assert created["price"] == {"amount": 1900, "currency": "usd"}

    async def test_publishing_needs_the_publish_scope(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        key = await create_api_key(client, author.account)  # default scopes: no publish
        response = await client.post(
            "/api/v1/marketplace/packages",
            json={"name": "x", "description": "d", "category": "web", "license": "MIT"},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert response.status_code == 403
        assert response.json()["code"] == "insufficient_scope"


class TestVersionLifecycle:
    async def test_draft_then_published_then_deprecated_then_yanked(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await create_package(client, author, "starter")
        draft = await upload(client, author, "starter", "1.0.0")
        assert draft["state"] == "draft"
        assert len(draft["sha256"]) == 64
        assert draft["signature"]
        assert (await package(client, "starter")).status_code == 404  # drafts only: hidden

        published = await act(client, author, "starter", "1.0.0", "publish")
        assert published["state"] == "published"
        view = (await package(client, "starter")).json()
        assert (view["listed"], view["latest_version"]) == (True, "1.0.0")
        assert view["quality_score"] > 0

        deprecated = await act(client, author, "starter", "1.0.0", "deprecate", reason="use 2.x")
        assert (deprecated["state"], deprecated["deprecation_message"]) == (
            "deprecated",
            "use 2.x",
        )
        assert (await package(client, "starter")).json()["listed"] is False

        yanked = await act(client, author, "starter", "1.0.0", "yank", reason="security hole")
        assert (yanked["state"], yanked["yank_reason"]) == ("yanked", "security hole")

    async def test_yanking_needs_a_reason(self, client: httpx.AsyncClient, author: Org) -> None:
        await publish(client, author, "starter")
        refused = await act(client, author, "starter", "1.0.0", "yank", expect=422)
        assert refused["code"] == "yank_reason_required"
        blank = await act(client, author, "starter", "1.0.0", "yank", reason="  ", expect=422)
        assert blank["code"] == "yank_reason_required"

    async def test_moves_the_lifecycle_does_not_allow_are_refused(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await create_package(client, author, "starter")
        await upload(client, author, "starter", "1.0.0")
        assert (await act(client, author, "starter", "1.0.0", "deprecate", expect=409))[
            "code"
        ] == "invalid_transition"
        assert (await act(client, author, "starter", "1.0.0", "yank", reason="x", expect=409))[
            "code"
        ] == "invalid_transition"
        await act(client, author, "starter", "1.0.0", "publish")
        again = await act(client, author, "starter", "1.0.0", "publish", expect=409)
        assert again["code"] == "invalid_transition"
        await act(client, author, "starter", "1.0.0", "yank", reason="broken")
        assert (await act(client, author, "starter", "1.0.0", "deprecate", expect=409))[
            "code"
        ] == "invalid_transition"
        unknown = await client.post(
            "/api/v1/marketplace/packages/starter/versions/1.0.0/undelete", headers=author.headers
        )
        assert unknown.status_code == 422

    async def test_a_version_is_never_reused_even_after_a_yank(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "starter")
        assert (await upload(client, author, "starter", "1.0.0", expect=409))[
            "code"
        ] == "duplicate_version"
        await act(client, author, "starter", "1.0.0", "yank", reason="broken")
        refused = await upload(client, author, "starter", "1.0.0", expect=409)
        assert refused["code"] == "duplicate_version"
        # Build metadata does not make another version (SemVer precedence ignores it).
        build = await upload(client, author, "starter", "1.0.0+build.7", expect=409)
        assert build["code"] == "duplicate_version"

    async def test_bad_semver_and_bad_dependencies_are_refused_before_the_upload(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await create_package(client, author, "starter")
        for bad in ("1.0", "v1.0.0", "latest", "1.0.0.0", ""):
            refused = await upload(client, author, "starter", bad, expect=422)
            assert refused["code"] in ("invalid_version", "validation_error"), bad
        for dependencies, code in [
            ([{"name": "starter", "spec": "*"}], "invalid_dependencies"),
            ([{"name": "other", "spec": ">>2"}], "invalid_version_spec"),
            ([{"spec": "1"}], "invalid_dependencies"),
        ]:
            refused = await upload(
                client, author, "starter", "1.0.0", dependencies=dependencies, expect=422
            )
            assert refused["code"] == code
        not_json = await client.post(
            "/api/v1/marketplace/packages/starter/versions",
            data={"version": "1.0.0", "dependencies": "[{"},
            files={"artifact": ("a.tgz", b"x")},
            headers=author.headers,
        )
        assert not_json.json()["code"] == "invalid_dependencies"

    async def test_publishing_is_blocked_by_validation_errors(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await create_package(client, author, "tiny")
        await upload(client, author, "tiny", "1.0.0", dependencies=[{"name": "ghost", "spec": "*"}])
        refused = await act(client, author, "tiny", "1.0.0", "publish", expect=422)
        assert refused["code"] == "package_invalid"
        assert "the dependency ghost does not exist" in refused["errors"]

    async def test_empty_and_oversized_artifacts_are_refused(
        self, app_factory: Callable[..., FastAPI], author: Org, client: httpx.AsyncClient
    ) -> None:
        await create_package(client, author, "starter")
        assert (await upload(client, author, "starter", "1.0.0", content=b"", expect=422))[
            "code"
        ] == "artifact_empty"
        small = app_factory(marketplace_max_artifact_bytes=1000)
        async with LifespanManager(small):
            transport = httpx.ASGITransport(app=small)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as other:
                refused = await upload(
                    other, author, "starter", "1.0.0", content=b"x" * 1001, expect=413
                )
                assert refused["code"] == "artifact_too_large"
                await upload(other, author, "starter", "1.0.0", content=b"x" * 1000)

    async def test_uploads_are_rate_limited_per_organization(
        self,
        app_factory: Callable[..., FastAPI],
        author: Org,
        buyer: Org,
        clock: ManualClock,
    ) -> None:
        limited = app_factory(marketplace_publish_burst=2, marketplace_publish_per_hour=60)
        async with LifespanManager(limited):
            transport = httpx.ASGITransport(app=limited)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                await create_package(client, author, "starter")
                await upload(client, author, "starter", "1.0.0")
                await upload(client, author, "starter", "1.0.1")
                response = await client.post(
                    "/api/v1/marketplace/packages/starter/versions",
                    data={"version": "1.0.2"},
                    files={"artifact": ("a.tgz", b"x")},
                    headers=author.headers,
                )
                assert response.status_code == 429
                assert response.json()["code"] == "publish_rate_limited"
                assert response.headers["Retry-After"] == "60"
                # Another organization has its own bucket.
                await create_package(client, buyer, "other")
                await upload(client, buyer, "other", "1.0.0")
                clock.advance(seconds=60)
                await upload(client, author, "starter", "1.0.2")


class TestOtherOrganizations:
    async def test_another_organizations_draft_is_invisible_and_untouchable(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await create_package(client, author, "secret")
        await upload(client, author, "secret", "1.0.0")
        assert (await package(client, "secret", author)).json()["versions"][0]["state"] == "draft"
        hidden = await package(client, "secret", buyer)
        assert (hidden.status_code, hidden.json()["code"]) == (404, "package_not_found")
        refused = await act(client, buyer, "secret", "1.0.0", "publish", expect=404)
        assert refused["code"] == "package_not_found"
        download = await client.get(
            "/api/v1/marketplace/packages/secret/1.0.0/download", headers=buyer.headers
        )
        assert download.status_code == 404

    async def test_another_organization_cannot_change_a_published_package(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "starter")
        await upload(client, author, "starter", "2.0.0")
        view = (await package(client, "starter", buyer)).json()
        assert [v["version"] for v in view["versions"]] == ["1.0.0"]  # the draft is hidden
        assert (await act(client, buyer, "starter", "1.0.0", "yank", reason="x", expect=403))[
            "code"
        ] == "not_package_owner"
        assert (await upload(client, buyer, "starter", "3.0.0", expect=403))[
            "code"
        ] == "not_package_owner"

    async def test_unknown_packages_and_versions_are_404(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "starter")
        assert (await package(client, "nothing")).json()["code"] == "package_not_found"
        missing = await act(client, author, "starter", "9.9.9", "publish", expect=404)
        assert missing["code"] == "version_not_found"
        download = await client.get(
            "/api/v1/marketplace/packages/starter/9.9.9/download", headers=author.headers
        )
        assert download.json()["code"] == "version_not_found"


class TestEditingPackages:
    async def test_a_description_publishing_would_refuse_is_refused_at_creation(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        refused = await create_package(client, author, "tiny", description="x", expect=422)
        assert refused["code"] == "invalid_description"
        assert (await package(client, "tiny", author)).status_code == 404  # the name is free
        await create_package(client, author, "tiny")

    async def test_the_author_changes_description_keywords_category_price_and_license(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await publish(client, author, "starter")
        changed = await client.patch(
            "/api/v1/marketplace/packages/starter",
            json={
                "description": "A better starter with tests, CI and documentation included.",
                "keywords": ["Django"],
                "category": "api",
                "price": {"amount": 900, "currency": "EUR"},
                "license": "LicenseRef-Acme",
            },
            headers=author.headers,
        )
        assert changed.status_code == 200, changed.text
        body = changed.json()
        assert (body["keywords"], body["category"], body["license"]) == (
            ["django"],
            "api",
            "LicenseRef-Acme",
        )
        assert body["price"] == {"amount": 900, "currency": "eur"}
        free_again = await client.patch(
            "/api/v1/marketplace/packages/starter", json={"price": None}, headers=author.headers
        )
        assert (free_again.status_code, free_again.json()["code"]) == (422, "invalid_license")
        both = await client.patch(
            "/api/v1/marketplace/packages/starter",
            json={"price": None, "license": "MIT"},
            headers=author.headers,
        )
        assert (both.json()["free"], both.json()["license"]) == (True, "MIT")

    async def test_bad_values_and_other_organizations_are_refused(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "starter")
        for body, code in [
            ({"description": "short"}, "invalid_description"),
            ({"category": "Web Apps!"}, "invalid_category"),
            ({"price": {"amount": 100, "currency": "zzz"}}, "invalid_currency"),
        ]:
            refused = await client.patch(
                "/api/v1/marketplace/packages/starter", json=body, headers=author.headers
            )
            assert (refused.status_code, refused.json()["code"]) == (422, code)
        stranger = await client.patch(
            "/api/v1/marketplace/packages/starter",
            json={"category": "api"},
            headers=buyer.headers,
        )
        assert (stranger.status_code, stranger.json()["code"]) == (403, "not_package_owner")


class TestDeletingPackages:
    async def test_a_package_never_published_is_deleted_and_its_name_freed(
        self, client: httpx.AsyncClient, author: Org
    ) -> None:
        await create_package(client, author, "draft-only")
        await upload(client, author, "draft-only", "1.0.0")
        deleted = await client.delete(
            "/api/v1/marketplace/packages/draft-only", headers=author.headers
        )
        assert deleted.status_code == 204, deleted.text
        assert (await package(client, "draft-only", author)).status_code == 404
        await create_package(client, author, "draft-only")

    async def test_a_published_package_stays(
        self, client: httpx.AsyncClient, author: Org, buyer: Org
    ) -> None:
        await publish(client, author, "starter")
        await act(client, author, "starter", "1.0.0", "yank", reason="broken")
        kept = await client.delete("/api/v1/marketplace/packages/starter", headers=author.headers)
        assert (kept.status_code, kept.json()["code"]) == (409, "package_published")
        stranger = await client.delete(
            "/api/v1/marketplace/packages/starter", headers=buyer.headers
        )
        assert stranger.status_code == 403
