"""`interlink serve`: the declared deployments and their automations, served by Prefect's runner in one process.

Each run sends heartbeats (`automations.HEARTBEAT_S`), so the server crashes a run whose process died
with the runner. SIGTERM (or Ctrl-C) stops the runner cleanly: the runs in progress are cancelled the
Prefect way (state Cancelled, their processes ended, their concurrency slots released), the schedules
are paused, and the process exits 0. Prefect 3.8.8's own SIGTERM handler calls the async `stop()` from
inside the event loop, which only makes a coroutine that is never awaited (`RuntimeWarning: coroutine
'Runner.astop' was never awaited`), and exits with the runs left Running.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from interlink.deployments.automations import HEARTBEAT_S, apply
from interlink.deployments.runner import runner_deployments
from prefect.runner import Runner
from prefect.settings import PREFECT_API_URL


class StoppingRunner(Runner):
    """Prefect's runner, whose SIGTERM cancels the runs in progress and stops it."""

    _stop_requested = False

    def handle_sigterm(self, *args: Any, **kwargs: Any) -> None:
        # Called in the main thread, which runs the event loop: schedule the stop on the loop, never block it.
        if self._stop_requested:  # a second signal while the runs are being cancelled
            return
        self._stop_requested = True
        self._logger.info("SIGTERM received: cancelling the runs in progress and stopping")
        loop = asyncio.get_running_loop()
        loop.call_soon_threadsafe(self._begin_stop, loop)

    def _begin_stop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopping = loop.create_task(self.astop())  # kept, so the task is not collected before it ends


def serve(limit: int | None = None) -> None:
    """Apply the automations, then serve every declared deployment until SIGTERM or Ctrl-C."""
    automations = apply()
    runner = StoppingRunner(limit=limit, heartbeat_seconds=HEARTBEAT_S)
    deployments = runner_deployments()
    for deployment in deployments:
        runner.add_deployment(deployment)
    print(f"serving {len(deployments)} deployments on {PREFECT_API_URL.value() or 'a temporary Prefect API'} ({', '.join(d.name for d in deployments)}), "
          f"{len(automations)} automations; SIGTERM or Ctrl-C stops", flush=True)

    async def start() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, runner.handle_sigterm)
        await runner.start()

    asyncio.run(start())
