from __future__ import annotations

import httpx

from tests.marketplace.conftest import Org, names, publish, search


async def test_smoke(client: httpx.AsyncClient, author: Org, buyer: Org) -> None:
    await publish(client, author, "flask-login", keywords=["flask", "auth"])
    await publish(
        client, author, "django-starter", dependencies=[{"name": "flask-login", "spec": "^1"}]
    )
    result = await search(client, query="flask")
    assert names(result) == ["flask-login"]
    r = await client.post(
        "/api/v1/marketplace/resolve",
        json={"requirements": [{"name": "django-starter"}]},
        headers=buyer.headers,
    )
    assert r.status_code == 200, r.text
    print(r.json())
    p = await client.post(
        "/api/v1/marketplace/packages/flask-login/purchase", headers=buyer.headers
    )
    assert p.status_code == 200, p.text
    d = await client.get(
        "/api/v1/marketplace/packages/flask-login/1.0.0/download", headers=buyer.headers
    )
    assert d.status_code == 200, d.text
    assert d.content == b"flask-login@1.0.0 archive"
    g = await client.get("/api/v1/marketplace/packages/flask-login")
    assert g.json()["versions"][0]["downloads"] == 1, g.json()
