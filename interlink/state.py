"""Interlink's own metadata database: the run ledger and the dead-letter store live here.

The tables below are the newest schema; `interlink/migrations/` holds every change that led to
them, and `state_engine` applies the missing ones to a database on first use.
"""

from functools import cache

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from interlink import migrations
from interlink.connectors.sql import Timestamp, create_engine

METADATA = sa.MetaData()

RUNS = sa.Table(
    "runs",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration", sa.String(100), nullable=False, index=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("flow_run_id", sa.String(36), index=True),  # one row per Prefect flow run, its attempts in it
    sa.Column("state", sa.String(20), nullable=False, index=True),  # RUNNING → COMPLETED / QUARANTINED / FAILED / CRASHED / CANCELLED
    sa.Column("started_at", Timestamp, nullable=False),
    sa.Column("finished_at", Timestamp),
    sa.Column("rows_read", sa.Integer, nullable=False, default=0),
    sa.Column("rows_inserted", sa.Integer, nullable=False, default=0),
    sa.Column("rows_updated", sa.Integer, nullable=False, default=0),
    sa.Column("rows_unchanged", sa.Integer, nullable=False, default=0),
    sa.Column("rows_quarantined", sa.Integer, nullable=False, default=0),
    sa.Column("rows_superseded", sa.Integer, nullable=False, default=0, server_default="0"),
    sa.Column("watermark_before", sa.String(64)),
    sa.Column("watermark", sa.String(64)),
    sa.Column("target", sa.String(500), nullable=False),
    sa.Column("report", sa.String(1000)),
    sa.Column("circuits", sa.String(500)),
    sa.Column("decision", sa.String(1000)),
    sa.Column("notes", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("host", sa.String(255)),  # the process running the run: a RUNNING row whose process is gone crashed
    sa.Column("pid", sa.Integer),
    sa.Column("process_started_at", Timestamp),  # tells a reused pid from the run's own process
    sa.Column("attempts", sa.Integer, nullable=False, default=1, server_default="1"),  # flow retries make more
    sa.Column("trace_id", sa.String(32)),  # the run's OpenTelemetry trace, when tracing is on
)

DEAD_LETTERS = sa.Table(
    "dead_letters",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration", sa.String(100), nullable=False),
    sa.Column("record_key", sa.String(200), nullable=False),
    sa.Column("stage", sa.String(20), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("values", sa.JSON, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("created_at", Timestamp, nullable=False),
    sa.Column("updated_at", Timestamp, nullable=False),
    sa.UniqueConstraint("integration", "record_key"),
)

DELIVERED = sa.Table(
    "delivered",
    METADATA,
    sa.Column("integration", sa.String(100), primary_key=True),
    sa.Column("record_key", sa.String(200), primary_key=True),
    sa.Column("row_hash", sa.String(16), nullable=False),
    sa.Column("delivered_at", Timestamp, nullable=False),
)

WEBHOOK_EVENTS = sa.Table(
    "webhook_events",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("integration", sa.String(100), nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
    sa.Column("received_at", Timestamp, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # received → triggered / failed
    sa.Column("flow_run_id", sa.String(36)),
    sa.Column("error", sa.Text),
    sa.UniqueConstraint("integration", "event_id"),
)

INTEGRATION_FACTS = sa.Table(
    "integration_facts",
    METADATA,
    sa.Column("integration", sa.String(100), primary_key=True),
    sa.Column("connections", sa.JSON, nullable=False),  # the connections its latest run used
    sa.Column("masked", sa.JSON, nullable=False),  # the fields it masked (`Gate.masked`)
    sa.Column("recorded_at", Timestamp, nullable=False),
)


@cache
def state_engine(url: str) -> Engine:
    """The engine for the metadata database at `url`, its schema upgraded to the newest on first use."""
    engine = create_engine(url)
    migrations.upgrade(engine)
    return engine
