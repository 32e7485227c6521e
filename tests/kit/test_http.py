"""The request edge: problem+json for every failure, body guards, request ids."""

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.fixtures.routes import router as edge_router

PROBLEM = "application/problem+json"


@pytest.fixture
async def edge(app: FastAPI, client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    app.include_router(edge_router)
    return client


class TestProblems:
    async def test_unknown_route_is_a_404_problem(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/nothing-here")
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["code"] == "not_found"
        assert body["status"] == 404
        assert body["type"].endswith("/not_found")
        assert body["request_id"] == response.headers["x-request-id"]

    async def test_wrong_method_is_a_405_problem_with_allow(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.delete("/api/v1/health")
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
        assert "GET" in response.headers["allow"]

    async def test_invalid_fields_are_a_422_listing_each(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post("/test/events", json={"kind": "", "amount": "many"})
        assert response.status_code == 422
        body = response.json()
        assert body["code"] == "validation_error"
        assert {tuple(error["loc"]) for error in body["errors"]} == {
            ("body", "kind"),
            ("body", "amount"),
        }

    async def test_malformed_json_is_a_400(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post(
            "/test/events", content=b'{"kind": ', headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.json()["code"] == "malformed_json"

    async def test_a_crash_is_a_500_that_shows_no_internals(
        self, edge: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
    ) -> None:
        response = await edge.get("/test/crash", headers={"X-Request-ID": "req-crash-1"})
        assert response.status_code == 500
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert body["code"] == "internal_error"
        assert body["request_id"] == "req-crash-1"
        assert "hunter2" not in response.text
        assert "Traceback" not in response.text


class TestUnreadableBodies:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b'{"kind": "\xff\xfe"}', id="not UTF-8"),
            pytest.param(b'{"kind": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", id="too deep"),
        ],
    )
    async def test_a_json_body_that_cannot_be_decoded_is_malformed_json(
        self, edge: httpx.AsyncClient, body: bytes
    ) -> None:
        response = await edge.post(
            "/test/events", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["code"] == "malformed_json"

    async def test_a_broken_multipart_body_is_malformed_multipart(
        self, edge: httpx.AsyncClient
    ) -> None:
        response = await edge.post(
            "/test/uploads",
            content=b"--xx\r\nContent-Disposition: form-data\r\n\r\nno name, no end",
            headers={"content-type": "multipart/form-data; boundary=xx"},
        )
        assert response.status_code == 400
        assert response.json()["code"] == "malformed_multipart"


class TestBodyGuards:
    async def test_a_form_sent_to_a_json_route_is_415(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post("/test/events", data={"kind": "x"})
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"

    async def test_multipart_sent_to_a_json_route_is_415(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post("/test/events", files={"kind": ("k.txt", b"x")})
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"

    async def test_json_sent_to_an_upload_route_is_415(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post("/test/uploads", json={"name": "x"})
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"

    async def test_an_upload_route_takes_multipart(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post(
            "/test/uploads", data={"name": "x"}, files={"artifact": ("a.tgz", b"bytes")}
        )
        assert response.status_code == 201
        assert response.json() == {"name": "x", "filename": "a.tgz"}

    async def test_wrong_content_type_is_415(self, edge: httpx.AsyncClient) -> None:
        response = await edge.post(
            "/test/events", content=b"kind=x", headers={"content-type": "text/plain"}
        )
        assert response.status_code == 415
        assert response.json()["code"] == "unsupported_media_type"

    async def test_declared_oversized_body_is_413_before_reading(
        self, app: FastAPI, edge: httpx.AsyncClient
    ) -> None:
        limit = app.state.settings.max_json_body_bytes
        payload = b'{"kind": "' + b"x" * limit + b'"}'
        response = await edge.post(
            "/test/events", content=payload, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        assert response.json()["code"] == "payload_too_large"

    async def test_streamed_oversized_body_is_413(
        self, app: FastAPI, edge: httpx.AsyncClient
    ) -> None:
        limit = app.state.settings.max_json_body_bytes

        async def chunks() -> AsyncIterator[bytes]:
            yield b'{"kind": "'
            for _ in range(limit // 65536 + 2):
                yield b"x" * 65536
            yield b'"}'

        response = await edge.post(
            "/test/events", content=chunks(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        count = await edge.get("/test/events/count")
        assert count.json() == {"count": 0}


class TestRequestIds:
    async def test_a_sane_incoming_request_id_is_kept(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/health", headers={"X-Request-ID": "abc-123"})
        assert response.headers["x-request-id"] == "abc-123"

    async def test_an_unsafe_incoming_request_id_is_replaced(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/api/v1/health", headers={"X-Request-ID": "a b\\c" * 30})
        assert response.headers["x-request-id"] != "a b\\c" * 30
        assert len(response.headers["x-request-id"]) == 32


class TestTransactions:
    async def test_a_success_is_committed_before_it_is_answered(
        self, edge: httpx.AsyncClient
    ) -> None:
        created = await edge.post("/test/events", json={"kind": "made"})
        assert created.status_code == 201
        assert (await edge.get("/test/events/count")).json() == {"count": 1}

    async def test_a_failure_rolls_back_what_the_request_wrote(
        self, edge: httpx.AsyncClient
    ) -> None:
        response = await edge.post("/test/events/then-fail", json={"kind": "lost"})
        assert response.status_code == 409
        assert response.json()["code"] == "boom"
        assert (await edge.get("/test/events/count")).json() == {"count": 0}

    async def test_an_error_marked_to_commit_keeps_its_writes(
        self, edge: httpx.AsyncClient
    ) -> None:
        response = await edge.post("/test/events/then-fail-keeping", json={"kind": "kept"})
        assert response.status_code == 409
        assert (await edge.get("/test/events/count")).json() == {"count": 1}


class TestPagination:
    async def test_pages_walk_every_item_once_newest_first(self, edge: httpx.AsyncClient) -> None:
        created = [
            (await edge.post("/test/events", json={"kind": f"k{n}"})).json()["id"] for n in range(5)
        ]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await edge.get("/test/events", params=params)).json()
            seen.extend(item["id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(created, reverse=True)

    async def test_a_forged_cursor_is_a_422(self, edge: httpx.AsyncClient) -> None:
        response = await edge.get("/test/events", params={"cursor": "' OR 1=1"})
        assert response.status_code == 422
        assert response.json()["code"] == "invalid_cursor"

    async def test_a_limit_over_the_maximum_is_a_422(self, edge: httpx.AsyncClient) -> None:
        response = await edge.get("/test/events", params={"limit": 10_000})
        assert response.status_code == 422
