import asyncio, time, tempfile, cProfile, pstats
from pathlib import Path
import httpx
from asgi_lifespan import LifespanManager
from tollway.app import create_app
from tollway.config import Settings
from tests.fixtures.identity import register
from tollway.metering.service import metering_service, UsageRecord

async def main():
    d = Path(tempfile.mkdtemp())
    s = Settings(database_url=f"sqlite+aiosqlite:///{d/'x.db'}", data_dir=d/"data", log_level="warning", run_worker_in_process=False)
    app = create_app(s)
    async with LifespanManager(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
            acc = await register(c)
        db = app.state.database
        n = 0
        async def batch():
            nonlocal n
            recs = [UsageRecord(meter="sync_runs", quantity=1, idempotency_key=f"k{n}-{i}") for i in range(1000)]
            n += 1
            async with db.transaction() as session:
                await metering_service.ingest(session, organization_id=acc.organization_id, records=recs, now=app.state.clock.now())
        await batch()
        pr = cProfile.Profile(); pr.enable()
        t = time.perf_counter()
        for _ in range(10): await batch()
        el = time.perf_counter() - t
        pr.disable()
        print("events/s", 10000/el)
        pstats.Stats(pr).sort_stats("tottime").print_stats(22)
asyncio.run(main())
