"""The agent reconnects within seconds of the platform's return with the production reconnect
policy, also when outages come close together (the backoff does not keep growing), and tries a
bounded number of times while the platform is away."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fakeplatform import PlatformServer, agent_settings, running_agent
from waiting import scaled

from berth.runtimes.memory import MemoryRuntime
from berth.settings import ConnectionSettings

OUTAGE_S = 2.0
OUTAGES = 3
BOUND_S = 5.5  # the cap (4 s) plus a connect and an accept on a busy machine; target p95 5 s


async def test_reconnects_within_the_cap_after_each_of_several_close_outages(tmp_path: Path) -> None:
    defaults = ConnectionSettings()  # the production policy, not the tests' fast one
    async with PlatformServer() as server:
        platform = server.platform
        settings = agent_settings(
            tmp_path / "data",
            platform.issue_connection_token(),
            backoff_initial_s=defaults.backoff_initial_s,
            backoff_max_s=defaults.backoff_max_s,
            healthy_after_s=defaults.healthy_after_s,
        )
        async with running_agent(settings, runtime=MemoryRuntime()) as running:
            await platform.wait_accepted()
            session = running.agent.session
            assert session is not None
            delays = []
            for outage in range(1, OUTAGES + 1):
                attempts_before = session.attempts
                await server.stop()
                await asyncio.sleep(OUTAGE_S)  # the outage itself: nothing to await
                tried = session.attempts - attempts_before
                await server.restart()
                back = time.monotonic()
                record = await platform.wait_accepted(count=outage + 1, within_s=BOUND_S)
                delays.append(record.at - back)
                # never more than one attempt per second once capped (cap / 4), plus the first two
                assert tried <= 2 + OUTAGE_S
            print(f"reconnected {', '.join(f'{d:.2f}' for d in delays)} s after the platform was back")
            assert max(delays) <= scaled(BOUND_S)
            assert not running.task.done()
