import asyncio, time, tempfile, cProfile, pstats
from pathlib import Path
import httpx
from asgi_lifespan import LifespanManager
from tollway.app import create_app
from tollway.config import Settings
from tests.fixtures.identity import register, create_api_key
from tests.fixtures.entitlements import override
from tollway.entitlements.service import entitlements_service

async def main():
    d = Path(tempfile.mkdtemp())
    s = Settings(database_url=f"sqlite+aiosqlite:///{d/'x.db'}", data_dir=d/"data", log_level="warning", run_worker_in_process=False)
    app = create_app(s)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            acc = await register(c)
            await override(app, acc.organization_id, {"features": {"sync": {"quota": 10**9}}})
        rt = app.state.entitlements
        async def one():
            d = await entitlements_service.decide(rt, organization_id=acc.organization_id, subject="k", feature="sync")
            assert d.allowed
        await one()
        for prof in (False, True):
            t = time.perf_counter()
            if prof: pr = cProfile.Profile(); pr.enable()
            for _ in range(50):
                await asyncio.gather(*(one() for _ in range(32)))
            if prof: pr.disable()
            print("prof" if prof else "", "decisions/s", 1600/(time.perf_counter()-t))
        pstats.Stats(pr).sort_stats("tottime").print_stats(20)
asyncio.run(main())
