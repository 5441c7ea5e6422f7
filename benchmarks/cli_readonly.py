"""How long the read-only commands take from the shell, against `prefect version` on the same machine.

    .venv/bin/python benchmarks/cli_readonly.py [--repeat 7]

A fresh temporary `INTERLINK_HOME` gets a state database as a day of runs leaves it: 300 ledger rows, 200 dead
letters, and each integration's facts (its connections and masked fields, as its runs record them). Then, `--repeat`
times, interleaved, each a fresh process: `interlink runs`, `interlink dlq list`, `interlink connectors`, `interlink
status` and `prefect version`; wall and CPU (user + system) of each. No connection is set, so `connectors` checks
nothing live: its figure is the command's own cost. No Prefect server (`PREFECT_API_URL` unset).

Prints the medians and each command's ratio to `prefect version`, and writes them to benchmarks/results/cli_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BIN = ROOT / ".venv" / "bin"
COMMANDS = {
    "runs": [BIN / "interlink", "runs"],
    "dlq list": [BIN / "interlink", "dlq", "list"],
    "connectors": [BIN / "interlink", "connectors"],
    "status": [BIN / "interlink", "status"],
    "prefect version": [BIN / "prefect", "version"],
}
RESULT = ROOT / "benchmarks" / "results" / "cli_startup.json"


def seed(env: dict[str, str]) -> None:
    """The state database of a working day, written in a child process with `env` (its own INTERLINK_HOME)."""
    code = """
from datetime import timedelta
from interlink.connectors.sql import utcnow
from interlink.flows import integrations
from interlink import integration_facts
from interlink.deadletter import DeadLetters, Reject
from interlink.settings import Settings
from interlink.state import RUNS, state_engine

url, now = Settings.load().state_db, utcnow()
names = list(integrations())
for name, (_, pipeline) in integrations().items():
    integration_facts.record(url, name, pipeline.connections, pipeline.gate.masked)
with state_engine(url).begin() as conn:
    conn.execute(RUNS.insert(), [
        dict(integration=names[i % len(names)], kind="sync", state="COMPLETED", started_at=now - timedelta(hours=i),
             finished_at=now - timedelta(hours=i) + timedelta(minutes=3), target="bench", attempts=1, rows_read=1000)
        for i in range(300)
    ])
DeadLetters(url).put("crm_to_billing", [
    Reject(f"c{i}", "check", f"email person{i}@example.com is refused", {"email": f"person{i}@example.com"}, [{"Email": f"person{i}@example.com"}])
    for i in range(200)
], None)
"""
    subprocess.run([BIN / "python", "-c", code], env=env, cwd=ROOT, check=True)


def timed(argv: list, env: dict[str, str]) -> tuple[float, float, int]:
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, argv[1:]))} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    load_before = os.getloadavg()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in load_before)} on {os.cpu_count()} cores", flush=True)
    walls: dict[str, list[float]] = {name: [] for name in COMMANDS}
    cpus: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory(prefix="interlink-readonly-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("INTERLINK_", "PREFECT_"))} | {
            "INTERLINK_HOME": str(Path(tmp) / "interlink"), "PREFECT_HOME": str(Path(tmp) / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false",
        }
        seed(env)
        for name, argv in COMMANDS.items():  # once each, unmeasured: files into the page cache, bytecode compiled
            timed(argv, env)
        for round_ in range(args.repeat):
            for name, argv in COMMANDS.items():
                wall, cpu, _ = timed(argv, env)
                walls[name].append(wall)
                cpus[name].append(cpu)
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {walls[n][-1]:.2f} s" for n in COMMANDS), flush=True)
    base_wall, base_cpu = statistics.median(walls["prefect version"]), statistics.median(cpus["prefect version"])
    result = {
        "repeat": args.repeat, "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
        "commands": {
            name: {"median_wall_s": round(statistics.median(walls[name]), 3), "median_cpu_s": round(statistics.median(cpus[name]), 3),
                   "wall_ratio": round(statistics.median(walls[name]) / base_wall, 2),
                   "cpu_ratio": round(statistics.median(cpus[name]) / base_cpu, 2), "walls_s": [round(w, 3) for w in walls[name]]}
            for name in COMMANDS
        },
    }
    for name, found in result["commands"].items():
        print(f"{name:16} median wall {found['median_wall_s']:.2f} s ({found['wall_ratio']:.2f}x prefect version), "
              f"CPU {found['median_cpu_s']:.2f} s ({found['cpu_ratio']:.2f}x)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    RESULT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written: {RESULT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
