from __future__ import annotations

import httpx
import jwt
import pytest
from fastapi import FastAPI

from tests.fixtures.billing import BillingAccount


class TestLicenseToken:
    async def test_the_token_verifies_offline_with_the_published_key(
        self, app: FastAPI, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.post("/api/v1/license/token", headers=account.headers)
        assert response.status_code == 200
        token = response.json()["token"]
        jwks = (await client.get("/api/v1/license/public-key")).json()
        assert jwks["keys"][0]["kty"] == "OKP"
        assert jwks["keys"][0]["crv"] == "Ed25519"
        header = jwt.get_unverified_header(token)
        assert header["alg"] == "EdDSA"
        key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
        claims = jwt.decode(
            token, key, algorithms=["EdDSA"], options={"verify_exp": False, "verify_iat": False}
        )
        assert claims["sub"] == account.organization_id
        assert (claims["plan"], claims["license_state"]) == ("free", "active")
        assert claims["features"] == {"offline": True}

    async def test_a_tampered_token_fails_verification(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        token = (await client.post("/api/v1/license/token", headers=account.headers)).json()[
            "token"
        ]
        jwks = (await client.get("/api/v1/license/public-key")).json()
        head, payload, signature = token.split(".")
        forged = f"{head}.{payload[:-2]}AA.{signature}"
        with pytest.raises(jwt.InvalidTokenError):
            jwt.decode(forged, jwt.PyJWK(jwks["keys"][0]), algorithms=["EdDSA"])

    async def test_without_credentials_no_token(
        self, client: httpx.AsyncClient, account: BillingAccount
    ) -> None:
        response = await client.post("/api/v1/license/token")
        assert response.status_code == 401
