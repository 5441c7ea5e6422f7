"""The first schema ever shipped (78e47b7): the run ledger `runs` and the dead-letter store `dead_letters`.

Revision ID: 0001_first_schema
Revises:
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from interlink.migrations import has_table

revision = "0001_first_schema"
down_revision = None
branch_labels = None
depends_on = None

# interlink.connectors.sql.Timestamp as it was: naive UTC, microseconds kept on MariaDB
Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    if not has_table("runs"):
        op.create_table(
            "runs",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("integration", sa.String(100), nullable=False),
            sa.Column("kind", sa.String(20), nullable=False),
            sa.Column("flow_run_id", sa.String(36)),
            sa.Column("state", sa.String(20), nullable=False),
            sa.Column("started_at", Timestamp, nullable=False),
            sa.Column("finished_at", Timestamp),
            sa.Column("rows_read", sa.Integer, nullable=False),
            sa.Column("rows_inserted", sa.Integer, nullable=False),
            sa.Column("rows_updated", sa.Integer, nullable=False),
            sa.Column("rows_unchanged", sa.Integer, nullable=False),
            sa.Column("rows_quarantined", sa.Integer, nullable=False),
            sa.Column("watermark_before", sa.String(64)),
            sa.Column("watermark", sa.String(64)),
            sa.Column("target", sa.String(500), nullable=False),
            sa.Column("report", sa.String(1000)),
            sa.Column("error", sa.Text),
        )
        op.create_index("ix_runs_integration", "runs", ["integration"])
    if not has_table("dead_letters"):
        op.create_table(
            "dead_letters",
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


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_index("ix_runs_integration", table_name="runs")
    op.drop_table("runs")
