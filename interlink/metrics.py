"""Prometheus figures of runs, read from the run ledger: what the ledger says happened, whichever process ran it.

`LedgerCollector` reads the state database at each scrape (a few GROUP BY queries), so a run that `interlink serve`
made in a subprocess counts as much as one of this process. Label values are integration names, the ledger's kinds
(`sync`, `replay`, `reconcile`, `stream`) and states, lowercase; never an address, a key or a record's value.

- `interlink_rows_{read,inserted,updated,unchanged,quarantined}_total{integration, kind}`: the ledger's sums (a running
  run's committed batches included); pruning ledger rows (`interlink state prune`) lowers them, seen as a counter reset;
- `interlink_runs_total{integration, kind, state}`: ended runs; `interlink_runs_running{integration, kind}`;
- `interlink_run_duration_seconds{integration, kind}`: `_sum` and `_count` of ended runs' durations (no quantiles);
- `interlink_last_run_duration_seconds`, `interlink_last_run_timestamp_seconds` (its end) and
  `interlink_last_run_rows{integration, kind, outcome}`: the latest ended run of each integration and kind;
- `interlink_last_success_timestamp_seconds{integration}`, `interlink_freshness_seconds{integration}` (since that
  success), as `interlink status` has them (`interlink.status`), and `interlink_freshness_sla_seconds{integration}`,
  the declared `fresh_within`: declared integrations only, and only once there is a success or such a promise;
- `interlink_dead_letters_open{integration}`; `interlink_build_info{version}` = 1.

Long-running commands serve them on `/metrics` (`serve`, on the port `INTERLINK_METRICS_PORT` sets); one-shot runs push
them to a Pushgateway (`push`, to the one `INTERLINK_PUSHGATEWAY_URL` names), one group per integration.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry, push_to_gateway, start_http_server
from prometheus_client.exposition import basic_auth_handler, default_handler
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.registry import Collector

from interlink.connectors.masking import plain_url
from interlink.deadletter import OPEN
from interlink.ledger import RUNNING, Ledger
from interlink.settings import ConfigError
from interlink.state import DEAD_LETTERS, RUNS, state_engine

log = logging.getLogger(__name__)

PUSH_JOB = "interlink"
PUSH_TIMEOUT_S = 5.0
ROWS = ("read", "inserted", "updated", "unchanged", "quarantined")  # the counters
OUTCOMES = (*ROWS, "superseded")  # the last run's figures
PREFIX = "interlink_"

_served: LedgerCollector | None = None  # the collector `serve` registered on the default registry
_warned: set[str] = set()  # what has been warned of in this process


class LedgerCollector(Collector):
    """The run figures of the state database at `state_db_url`: every integration's, or only `integration`'s."""

    def __init__(self, state_db_url: str, integration: str | None = None):
        self._url = state_db_url
        self._integration = integration

    def describe(self) -> list[Metric]:
        """The families, without samples: the registry learns their names without reading the database."""
        return list(_families().values())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        self._freshness(families)  # first, as it reaps: a run whose process died is counted crashed, not running
        engine = state_engine(self._url)
        only = [RUNS.c.integration == self._integration] if self._integration else []
        with engine.connect() as conn:
            self._totals(conn, families, _seconds(engine.dialect.name, RUNS.c.started_at, RUNS.c.finished_at), only)
            self._latest(conn, families, only)
            letters = sa.select(DEAD_LETTERS.c.integration, sa.func.count()).where(DEAD_LETTERS.c.status == OPEN)
            if self._integration:
                letters = letters.where(DEAD_LETTERS.c.integration == self._integration)
            for integration, count in conn.execute(letters.group_by(DEAD_LETTERS.c.integration)):
                families["dead_letters_open"].add_metric([integration], count)
        families["build_info"].add_metric([version("interlink")], 1)
        yield from families.values()

    def _totals(self, conn: sa.Connection, families: dict[str, Metric], duration: sa.ColumnElement, only: list) -> None:
        """Row sums, runs by state, running runs and the duration summary, in one GROUP BY."""
        ended = RUNS.c.state != RUNNING
        query = (
            sa.select(
                RUNS.c.integration, RUNS.c.kind, RUNS.c.state, sa.func.count(), sa.func.count(RUNS.c.finished_at),
                sa.func.sum(sa.case((ended, duration))), *(sa.func.sum(RUNS.c[f"rows_{row}"]) for row in ROWS),
            )
            .where(*only)
            .group_by(RUNS.c.integration, RUNS.c.kind, RUNS.c.state)
        )
        rows: dict[tuple[str, str], list[int]] = {}
        durations: dict[tuple[str, str], list[float]] = {}
        for integration, kind, state, runs, finished, seconds, *sums in conn.execute(query):
            key = (integration, kind)
            rows[key] = [a + int(b or 0) for a, b in zip(rows.get(key, [0] * len(ROWS)), sums, strict=True)]
            if state == RUNNING:
                families["runs_running"].add_metric(list(key), runs)
                continue
            families["runs"].add_metric([*key, state.lower()], runs)
            count, total = durations.get(key, [0, 0.0])
            durations[key] = [count + finished, total + float(seconds or 0)]
        for key, sums in rows.items():
            for row, value in zip(ROWS, sums, strict=True):
                families[f"rows_{row}"].add_metric(list(key), value)
        for key, (count, total) in durations.items():
            families["run_duration"].add_metric(list(key), count, total)

    def _latest(self, conn: sa.Connection, families: dict[str, Metric], only: list) -> None:
        """The latest ended run of each integration and kind (the highest id, as `interlink runs` orders them)."""
        latest = sa.select(sa.func.max(RUNS.c.id)).where(RUNS.c.state != RUNNING, *only).group_by(RUNS.c.integration, RUNS.c.kind)
        for run in conn.execute(sa.select(RUNS).where(RUNS.c.id.in_(latest))).mappings():
            key = [run["integration"], run["kind"]]
            if run["finished_at"] is not None:
                families["last_run_duration"].add_metric(key, (run["finished_at"] - run["started_at"]).total_seconds())
                families["last_run_timestamp"].add_metric(key, _epoch(run["finished_at"]))
            for outcome in OUTCOMES:
                families["last_run_rows"].add_metric([*key, outcome], run[f"rows_{outcome}"])

    def _freshness(self, families: dict[str, Metric]) -> None:
        """Last success and freshness as `interlink status` has them (its runs whose process died marked CRASHED
        first), and the declared `fresh_within`; none when the declaration cannot be read (told once)."""
        from interlink.deployments.declaration import read
        from interlink.status import status

        try:
            declared = read()
        except (ConfigError, OSError) as exc:
            _warn_once("declaration", "no freshness figures: the deployments declaration cannot be read: %s", exc)
            Ledger(self._url).reap()
            return
        now = datetime.now(UTC)
        for entry in status(declared, self._url, now):
            name = entry["integration"]
            if self._integration and name != self._integration:
                continue
            if entry["last_success_at"] is not None:
                families["last_success_timestamp"].add_metric([name], entry["last_success_at"].timestamp())
                families["freshness"].add_metric([name], (now - entry["last_success_at"]).total_seconds())
            sla = declared.integrations[name].sla
            if sla is not None and sla.fresh_within is not None:
                families["freshness_sla"].add_metric([name], sla.fresh_within.total_seconds())


def _families() -> dict[str, Metric]:
    """Every family the ledger collector yields, empty."""
    ik = ["integration", "kind"]
    families: dict[str, Metric] = {
        f"rows_{row}": CounterMetricFamily(f"{PREFIX}rows_{row}", f"Rows {row} by runs, as the run ledger sums them", labels=ik)
        for row in ROWS
    }
    return families | {
        "runs": CounterMetricFamily(f"{PREFIX}runs", "Ended runs by their final state in the run ledger", labels=[*ik, "state"]),
        "runs_running": GaugeMetricFamily(f"{PREFIX}runs_running", "Runs the ledger has running now", labels=ik),
        "run_duration": SummaryMetricFamily(f"{PREFIX}run_duration_seconds", "Durations of ended runs", labels=ik),
        "last_run_duration": GaugeMetricFamily(f"{PREFIX}last_run_duration_seconds", "Duration of the latest ended run", labels=ik),
        "last_run_timestamp": GaugeMetricFamily(f"{PREFIX}last_run_timestamp_seconds", "When the latest ended run ended", labels=ik),
        "last_run_rows": GaugeMetricFamily(f"{PREFIX}last_run_rows", "Rows of the latest ended run, by outcome", labels=[*ik, "outcome"]),
        "last_success_timestamp": GaugeMetricFamily(
            f"{PREFIX}last_success_timestamp_seconds", "When the latest successful sync ended (as interlink status has it)",
            labels=["integration"],
        ),
        "freshness": GaugeMetricFamily(f"{PREFIX}freshness_seconds", "Seconds since the latest successful sync ended", labels=["integration"]),
        "freshness_sla": GaugeMetricFamily(f"{PREFIX}freshness_sla_seconds", "The declared fresh_within", labels=["integration"]),
        "dead_letters_open": GaugeMetricFamily(f"{PREFIX}dead_letters_open", "Open dead letters", labels=["integration"]),
        "build_info": GaugeMetricFamily(f"{PREFIX}build_info", "Interlink's version", labels=["version"]),
    }


LEDGER_NAMES = frozenset(family.name for family in _families().values())


def _seconds(dialect: str, start: sa.ColumnElement, end: sa.ColumnElement) -> sa.ColumnElement:
    """`end - start` in seconds, in SQL, as the state database's dialect computes it (SQLite: to the millisecond)."""
    if dialect == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0
    if dialect == "postgresql":
        return sa.func.extract("epoch", end - start)
    return sa.func.timestampdiff(sa.literal_column("MICROSECOND"), start, end) / 1e6  # MySQL, MariaDB


def _epoch(moment: datetime) -> float:
    """A ledger time (naive UTC) in Unix seconds."""
    return moment.replace(tzinfo=UTC).timestamp()


class _Connections(Collector):
    """The default registry's Interlink figures that are not the ledger's: the connections' (`interlink.connectors.telemetry`);
    with `connections`, only theirs, and counts less what they were at `since` (a `snapshot`): one run's own."""

    def __init__(self, connections: Iterable[str] | None = None, since: dict[tuple, float] | None = None):
        self.connections, self.since = (set(connections) if connections is not None else None), since or {}

    def collect(self) -> Iterable[Metric]:
        for family in REGISTRY.collect():
            if not family.name.startswith(PREFIX) or family.name in LEDGER_NAMES:
                continue
            own = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                if self.connections is None or s.labels.get("connection") in self.connections:
                    before = self.since.get(_key(s)) if family.type != "gauge" else None
                    own.add_sample(s.name, s.labels, s.value - (before or 0))
            yield own


def snapshot() -> dict[tuple, float]:
    """This process's connection figures now, for a run's push to subtract (`push`'s `since`)."""
    return {_key(s): s.value for family in _Connections().collect() for s in family.samples}


def _key(sample: Any) -> tuple:
    return sample.name, tuple(sorted(sample.labels.items()))


def serve(state_db: str, port: int | None, addr: str) -> int | None:
    """With a `port` (`INTERLINK_METRICS_PORT`; 0: any free port), serve the default registry, with the ledger's figures
    of every integration on it, on `/metrics` at `addr` (`INTERLINK_METRICS_ADDR`), say where in one line, and return
    the port; None without one. A later call serves `state_db`'s figures instead of the earlier one's."""
    global _served
    if port is None:
        return None
    collector = LedgerCollector(state_db)
    if _served is not None:
        REGISTRY.unregister(_served)
    REGISTRY.register(collector)
    _served = collector
    try:
        server, _ = start_http_server(port, addr)
    except OSError as exc:
        raise ConfigError(
            f"metrics cannot be served at {addr}:{port} ({exc.strerror or exc}): set INTERLINK_METRICS_PORT to a free port "
            "and INTERLINK_METRICS_ADDR to an address of this host"
        ) from None
    port = server.server_port
    print(f"metrics on http://{f'[{addr}]' if ':' in addr else addr}:{port}/metrics", flush=True)
    return port


def push(state_db: str, url: str | None, integration: str, connections: Iterable[str] = (), since: dict[tuple, float] | None = None) -> None:
    """With a Pushgateway `url` (`INTERLINK_PUSHGATEWAY_URL`), replace group `{job="interlink", integration=…}` there with
    `integration`'s ledger figures and its run's figures of its `connections` (counted from the `snapshot` `since`: a
    process that runs several integrations pushes each one's own). A user and password in the URL are sent as basic
    auth. Never raises: a failure is one warning per process, naming the URL without its credentials."""
    if not url:
        return
    parts = urlsplit(url)
    gateway = plain_url(url)
    handler = default_handler
    if parts.username is not None:
        handler = partial(basic_auth_handler, username=unquote(parts.username), password=unquote(parts.password or ""))
    registry = CollectorRegistry()
    registry.register(LedgerCollector(state_db, integration))
    registry.register(_Connections(connections, since))
    try:
        push_to_gateway(gateway, PUSH_JOB, registry, {"integration": integration}, timeout=PUSH_TIMEOUT_S, handler=handler)
    except Exception as exc:  # noqa: BLE001 - the run is done; its figures are in the ledger all the same
        _warn_once("push", "metrics not pushed to the Pushgateway at %s: %s: %s", gateway, type(exc).__name__, _first_line(exc))


def _warn_once(what: str, message: str, *args: object) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(message, *args)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]
