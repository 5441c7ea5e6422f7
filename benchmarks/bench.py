"""Sync benchmark: Interlink against a hand-written httpx + COPY baseline and dlt, N rows from REST into PostgreSQL.

    .venv/bin/python benchmarks/bench.py --n 100000 --repeat 3        # or: make bench [N=1000000]

1. Generates N customer rows (10 fields) once and serves them from `benchmarks/source.py` in this process.
2. Starts one real Prefect server (a temporary PREFECT_HOME), so its start-up is outside every timing.
3. Each repetition runs every contender, in a rotated order, in a subprocess of its own, into a fresh PostgreSQL
   schema of its own; the source is reset before each. Peak RSS is the child's own VmHWM, CPU time its `os.wait4` rusage.
   Interlink also runs a no-change incremental sync, one after 1 % of the source rows changed, and a full re-sync
   into its populated target.
   `interlink_observed` is the same Interlink contender with lineage, metrics and tracing on: OpenLineage events and
   OTLP/HTTP spans go to `benchmarks/sink.py`, the metrics to a real Pushgateway, each a process of its own started
   here for the whole benchmark (skipped, saying why, without `/usr/bin/prometheus-pushgateway`). The two Interlink
   contenders run back to back, in turn first; what the sink and the Pushgateway received after each run is kept with it,
   so the report can show that observability was on in the observed runs and off in the plain ones.
   With `--profile`, one more run of each Interlink contender, under pyinstrument, writes its call tree; it counts in
   no figure.
4. Writes `benchmarks/results/bench-<N>.json`, and the same as `latest.json` with `latest.md` (see `bench_report.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from interlink.demo_systems.server import serve
from interlink.flows import CHUNK_ROWS

from benchmarks.bench_report import markdown, summarise
from benchmarks.common import machine, run_child
from benchmarks.source import Customers, create_app

RESULTS = ROOT / "benchmarks" / "results"
API_KEY = "sk-bench-41d7e2"
OBSERVED = "interlink_observed"
CONTENDERS = {
    "interlink": "benchmarks.contenders.interlink",
    OBSERVED: "benchmarks.contenders.interlink",  # with the observers' variables (`Observers.env`)
    "baseline": "benchmarks.contenders.baseline",
    "dlt": "benchmarks.contenders.dlt_rest",
}
QUIET = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
OBSERVABILITY = ("OPENLINEAGE_", "OTEL_", "INTERLINK_PUSHGATEWAY_URL", "INTERLINK_METRICS_")  # kept from every other run
PUSHGATEWAY = Path("/usr/bin/prometheus-pushgateway")
INTEGRATION = "crm_to_billing"  # its Pushgateway group: {job="interlink", integration=…}


@contextmanager
def prefect_server(home: Path, timeout: float = 180.0) -> Iterator[str]:
    """A real Prefect server on a free port with its database under `home`; yields its API URL."""
    port = free_port()
    env = {**os.environ, **QUIET, "PREFECT_HOME": str(home)}
    env["PREFECT_API_DATABASE_CONNECTION_URL"] = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    cmd = [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with open(home / "server.log", "w") as log:
        server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(url + "/health"):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not start; see {home / 'server.log'}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Observers:
    """The back ends of the observed runs: the sink (OpenLineage and OTLP) and a Pushgateway, each a process of its own."""

    def __init__(self, sink: str, gateway: str):
        self.sink, self.gateway = sink, gateway
        self.env = {
            "OPENLINEAGE_URL": sink,
            "OPENLINEAGE_NAMESPACE": "bench",
            "OTEL_EXPORTER_OTLP_ENDPOINT": sink,
            "OTEL_SERVICE_NAME": "interlink-bench",
            "INTERLINK_PUSHGATEWAY_URL": gateway,
        }

    def received(self) -> dict:
        """What reached them since the last call: the sink's counts, and the Pushgateway's group of the integration,
        its `interlink_rows_*_total` summed over kinds (the group is deleted, so a run that does not push shows none)."""
        sink = httpx.get(self.sink + "/counts", timeout=60).raise_for_status().json()
        group = f"{self.gateway}/metrics/job/interlink/integration/{INTEGRATION}"
        rows: dict[str, float] = {}
        for family in text_string_to_metric_families(httpx.get(self.gateway + "/metrics", timeout=10).raise_for_status().text):
            for sample in family.samples:
                mine = sample.labels.get("job") == "interlink" and sample.labels.get("integration") == INTEGRATION
                if mine and sample.name.startswith("interlink_rows_") and sample.name.endswith("_total"):
                    rows[sample.name] = rows.get(sample.name, 0) + sample.value
        httpx.delete(group, timeout=10).raise_for_status()
        return {**sink, "pushgateway": rows}


@contextmanager
def observers(work: Path) -> Iterator[Observers | None]:
    """The sink and a Pushgateway on free ports for the whole benchmark; None, saying why, when the Pushgateway is absent."""
    if not os.access(PUSHGATEWAY, os.X_OK):
        print(f"skipping {OBSERVED}: {PUSHGATEWAY} is absent (Debian: apt-get install prometheus-pushgateway)", flush=True)
        yield None
        return
    with ExitStack() as stack:
        sink = subprocess.Popen([sys.executable, "-m", "benchmarks.sink"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        stack.callback(_stop, sink)
        sink_url = f"http://127.0.0.1:{int(sink.stdout.readline())}"
        port = free_port()
        with open(work / "pushgateway.log", "w") as log:
            cmd = [str(PUSHGATEWAY), f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="]  # not Debian's shared file
            gateway = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        stack.callback(_stop, gateway)
        gateway_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while not _healthy(gateway_url + "/-/ready"):
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Pushgateway did not start; see {work / 'pushgateway.log'}")
            time.sleep(0.2)
        yield Observers(sink_url, gateway_url)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(30)


def rotation(names: list[str], rep: int) -> list[str]:
    """The contenders of repetition `rep` (from 0), rotated; the two Interlink contenders back to back, in turn first,
    so that a change in the machine's load between them touches both alike."""
    pair = ["interlink", OBSERVED] if rep % 2 == 0 else [OBSERVED, "interlink"]
    units = [[name] for name in names if name != OBSERVED]
    if OBSERVED in names and "interlink" in names:
        units[[unit[0] for unit in units].index("interlink")] = pair
    elif OBSERVED in names:
        units.append([OBSERVED])
    k = rep % len(units)
    return [name for unit in units[k:] + units[:k] for name in unit]


def fresh_schema(pg: str, schema: str, drop_only: bool = False) -> None:
    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        if not drop_only:
            conn.execute(f"CREATE SCHEMA {schema}")


def rows_in(pg: str, schema: str) -> int:
    with psycopg.connect(pg) as conn:
        return conn.execute(f"SELECT count(*) FROM {schema}.customers").fetchone()[0]


def run_contender(name: str, config: dict, env: dict, work: Path, timeout: float) -> dict:
    """One contender's sync in its own process, into a fresh schema; its figures, process wall and CPU seconds."""
    fresh_schema(config["pg"], config["schema"])
    out, log = work / f"{config['schema']}.json", work / f"{config['schema']}.log"
    try:
        cmd = [sys.executable, "-m", CONTENDERS[name], json.dumps(config), str(out)]
        with open(log, "w") as output:
            try:
                process_s, cpu_s = run_child(cmd, timeout, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
            except (subprocess.CalledProcessError, TimeoutError):
                print("".join(log.read_text().splitlines(keepends=True)[-40:]), file=sys.stderr)
                raise
        result = json.loads(out.read_text())
        result.update(process_s=process_s, process_cpu_s=cpu_s, rows_in_target=rows_in(config["pg"], config["schema"]))
        return result
    finally:
        fresh_schema(config["pg"], config["schema"], drop_only=True)


def main(args: argparse.Namespace) -> dict:
    started, described = time.perf_counter(), machine(args.pg)  # the load average before the benchmark's own
    work = Path(tempfile.mkdtemp(prefix="interlink-bench-"))
    print(f"generating {args.n:,} source rows …", flush=True)
    customers = Customers(args.n, seed=args.seed)
    generated_s = time.perf_counter() - started
    repetitions, contenders = [], list(args.contenders)
    try:
        (work / "prefect").mkdir()
        with (
            prefect_server(work / "prefect") as api_url,
            serve(create_app(customers, API_KEY)) as url,
            observers(work) if OBSERVED in contenders else nullcontext() as watching,
        ):
            plain = {k: v for k, v in os.environ.items() if not k.startswith(OBSERVABILITY)}
            env = {**plain, **QUIET, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect")}
            if watching is None and OBSERVED in contenders:
                contenders.remove(OBSERVED)
            base = {"url": url, "api_key": API_KEY, "page": args.page, "pg": args.pg, "chunk": args.chunk}
            base.update(concurrent_pages=args.concurrent_pages, change_share=args.change_share)
            for rep in range(args.repeat):
                order = rotation(contenders, rep)
                runs = {}
                for name in order:
                    customers.reset()
                    schema = f"bench_{name}_{rep + 1}"
                    config = {**base, "schema": schema, "home": str(work / schema)}
                    runs[name] = run_contender(name, config, observed_env(env, watching, name), work, args.timeout)
                    if watching:
                        runs[name]["received"] = watching.received()
                    print(f"  rep {rep + 1} {name}: {runs[name]['sync_s']:.1f}s, {runs[name]['peak_rss_mb']:.0f} MB", flush=True)
                repetitions.append({"repetition": rep + 1, "order": order, "runs": runs, "load_avg": _load()})
            if args.profile:  # runs of their own: the profiler's cost stays out of every figure
                for name in ("interlink", OBSERVED):
                    if name in contenders:
                        customers.reset()
                        profile = str(RESULTS / f"profile-{'observed-' if name == OBSERVED else ''}{args.n}.txt")
                        config = {**base, "schema": "bench_profiled", "home": str(work / f"profiled_{name}"), "profile": profile}
                        run_contender(name, config, observed_env(env, watching, name), work, args.timeout)
                        if watching:
                            watching.received()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": described,
        "settings": {
            **{k: getattr(args, k) for k in ("n", "repeat", "page", "chunk", "concurrent_pages", "seed", "change_share")},
            "contenders": contenders,
        },
        "source_generation_s": round(generated_s, 2),
        "benchmark_s": round(time.perf_counter() - started, 1),
        "repetitions": repetitions,
    }


def observed_env(env: dict, watching: Observers | None, name: str) -> dict:
    """The environment of contender `name`: the observers' variables added for the observed one."""
    return {**env, **watching.env} if name == OBSERVED else env


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write(raw: dict) -> dict:
    """Summarise, with the RSS of the other benchmark size when its results exist, and write the result files."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    n = raw["settings"]["n"]
    sized = (p for p in RESULTS.glob("bench-*.json") if p.stem.removeprefix("bench-").isdigit())  # not bench-…-before-….json
    others = {int(p.stem.removeprefix("bench-")): json.loads(p.read_text()) for p in sized}
    report = summarise(raw, {size: other for size, other in others.items() if size != n})
    text = json.dumps(report, indent=2)
    (RESULTS / f"bench-{n}.json").write_text(text)
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / "latest.md").write_text(markdown(report))
    return report


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="source rows")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians are reported)")
    parser.add_argument("--page", type=int, default=1000, help="source page size")
    parser.add_argument("--chunk", type=int, default=CHUNK_ROWS, help="Interlink's chunk_size (default: its own, flows.CHUNK_ROWS)")
    parser.add_argument("--concurrent-pages", type=int, default=4, help="Interlink's RestSource.concurrent_pages")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--change-share", type=float, default=0.01, help="share of rows changed before the last incremental")
    parser.add_argument("--contenders", type=lambda s: s.split(","), default=list(CONTENDERS), help="comma-separated")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test", help="libpq URL of the target")
    parser.add_argument(
        "--profile", action="store_true", help="profile one more Interlink full sync, outside the figures (results/profile-N.txt)"
    )
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per contender run")
    return parser.parse_args(argv)


if __name__ == "__main__":
    report = write(main(parse(sys.argv[1:])))
    print(markdown(report))
    print(f"\nwrote {(RESULTS / 'latest.json').relative_to(ROOT)} and latest.md in {report['benchmark_s']}s")
    if (observed := report.get("observability")) and not observed["verified"]:
        print("\nOBSERVABILITY WAS NOT (ALL) ON IN THE OBSERVED RUNS, THE OVERHEAD FIGURE IS VOID:", *observed["problems"], sep="\n  ",
              file=sys.stderr)
