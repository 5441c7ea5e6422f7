"""How long a no-change `interlink run crm_to_billing` takes from the shell, with and without a Prefect server.

    .venv/bin/python benchmarks/cli_startup.py [--repeat 3] [--no-server-too]

1. Seeds the demo CRM (5,000 customers) in a fresh temporary `INTERLINK_HOME` and serves it (CRM + finance
   API, fault rate 0) on a local port; billing is a SQLite file in that home.
2. Starts `prefect server start` on a free port (its own temporary `PREFECT_HOME`) and waits for its health check.
3. Runs `interlink run crm_to_billing` once to deliver everything, then `--repeat` times with nothing changed,
   each a fresh `.venv/bin/interlink` process: its wall time and its CPU (user + system, from `wait4`).
4. With `--no-server-too`, the same no-change runs with no `PREFECT_API_URL` (Prefect starts a temporary server).

Prints one line per run and the medians, with the load average before and after (on a shared machine CPU is
the steadier figure). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from interlink.demo_systems import crm_data
from interlink.demo_systems.app import create_app
from interlink.demo_systems.server import serve

API_KEY = "sk-bench-start-3f1a"
INTERLINK = ROOT / ".venv" / "bin" / "interlink"
PREFECT = ROOT / ".venv" / "bin" / "prefect"


def timed(env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one `interlink run crm_to_billing`, and its summary line."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run([INTERLINK, "run", "crm_to_billing"], env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    out, err = proc.stdout, proc.stderr
    if proc.returncode != 0:
        raise SystemExit(f"interlink run failed ({proc.returncode}):\n{err[-3000:]}")
    summary = next((line for line in out.splitlines() if "sync: read" in line), "?")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)  # only reaped children: this run
    return wall, cpu, summary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def prefect_server(home: Path):
    """A real `prefect server start` on a free port; yields its API URL."""
    port = _free_port()
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    proc = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("prefect server did not start")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def measure(label: str, env: dict[str, str], repeat: int) -> None:
    cpus, walls = [], []
    for _ in range(repeat):
        wall, cpu, summary = timed(env)
        walls.append(wall)
        cpus.append(cpu)
        print(f"{label}: wall {wall:.1f} s, CPU {cpu:.1f} s  ({summary.strip()})  load {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{label}: median wall {statistics.median(walls):.1f} s, median CPU {statistics.median(cpus):.1f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-server-too", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores", flush=True)
    with tempfile.TemporaryDirectory(prefix="interlink-startup-") as tmp:
        home = Path(tmp)
        crm_data.seed(home / "crm.db")
        with serve(create_app(home / "crm.db", api_key=API_KEY, fault_rate=0.0)) as crm:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLINK_", "PREFECT_"))} | {
                "INTERLINK_HOME": str(home / "interlink"), "INTERLINK_CRM__BASE_URL": crm, "INTERLINK_CRM__AUTH__KIND": "api_key",
                "INTERLINK_CRM__AUTH__KEY": API_KEY, "INTERLINK_FINANCE__BASE_URL": crm,
                "INTERLINK_BILLING__URL": f"sqlite:///{home / 'billing.db'}",
                "PREFECT_HOME": str(home / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
            }
            with prefect_server(home / "prefect-server") as api:
                served = env | {"PREFECT_API_URL": api}
                _, _, first = timed(served)
                print(f"first run: {first.strip()}", flush=True)
                measure("with a server", served, args.repeat)
            if args.no_server_too:
                measure("without a server", env, args.repeat)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


if __name__ == "__main__":
    main()
