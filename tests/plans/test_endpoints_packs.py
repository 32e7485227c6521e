import httpx


class TestTokenPacks:
    async def test_the_catalog_token_packs_are_for_sale(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/api/v1/credits/packs")
        assert response.status_code == 200
        packs = {pack["tokens"]: pack["price"] for pack in response.json()["items"]}
        assert packs == {
            500: {"amount": 2900, "currency": "usd"},
            2000: {"amount": 7900, "currency": "usd"},
        }
