"""The OpenAPI document describes the errors and credentials the API really answers."""

from typing import Any

import httpx
import pytest

PROBLEM = "application/problem+json"


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    answer: dict[str, Any] = (await client.get("/api/v1/openapi.json")).json()
    return answer


def problem_schema(operation: dict[str, Any], status: str) -> dict[str, Any]:
    content: dict[str, Any] = operation["responses"][status]["content"]
    assert list(content) == [PROBLEM]
    schema: dict[str, Any] = content[PROBLEM]["schema"]
    return schema


class TestOpenApiDocument:
    async def test_every_operation_declares_problem_errors(self, document: dict[str, Any]) -> None:
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                assert problem_schema(operation, "default") == {
                    "$ref": "#/components/schemas/Problem"
                }, f"{method} {path}"
                assert problem_schema(operation, "500")

    async def test_validation_errors_are_declared_as_problems(
        self, document: dict[str, Any]
    ) -> None:
        register = document["paths"]["/api/v1/auth/register"]["post"]
        assert problem_schema(register, "422") == {"$ref": "#/components/schemas/Problem"}
        for status in ("400", "413", "415"):
            assert problem_schema(register, status)
        problem = document["components"]["schemas"]["Problem"]
        assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}

    async def test_credentials_are_declared_where_they_are_needed(
        self, document: dict[str, Any]
    ) -> None:
        schemes = document["components"]["securitySchemes"]
        assert schemes["bearer"] == {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["bearer"]["description"],
        }
        me = document["paths"]["/api/v1/auth/me"]["get"]
        assert me["security"] == [{"bearer": []}, {"session": []}]
        assert problem_schema(me, "401")
        assert problem_schema(me, "403")
        health = document["paths"]["/api/v1/health"]["get"]
        assert "security" not in health
        assert "401" not in health["responses"]

    async def test_an_endpoint_that_takes_optional_credentials_says_so(
        self, document: dict[str, Any]
    ) -> None:
        optional = [
            f"{method} {path}"
            for path, operations in document["paths"].items()
            for method, operation in operations.items()
            if {} in operation.get("security", [])
        ]
        assert optional
        assert all(
            path.startswith(("get /api/v1/marketplace", "post /api/v1/marketplace"))
            for path in optional
        )
