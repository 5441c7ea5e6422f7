"""Runs that tell the truth after a crash: `rows_superseded`, and the process running each run.

- `runs.rows_superseded`: rows dropped because a newer record of the same key was in the same
  batch, so read = inserted + updated + unchanged + quarantined + superseded;
- `runs.host`, `runs.pid`, `runs.process_started_at`: the process running the run, so a RUNNING
  row whose process is gone (or whose pid now belongs to another process) is marked CRASHED;
- `runs.state` may now be CRASHED (it is free text: no constraint changes), and is indexed, as
  every run start looks for RUNNING rows.

Revision ID: 0006_run_process
Revises: 0005_webhook_events
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006_run_process"
down_revision = "0005_webhook_events"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.add_column("runs", sa.Column("rows_superseded", sa.Integer, nullable=False, server_default="0"))
    op.add_column("runs", sa.Column("host", sa.String(255)))
    op.add_column("runs", sa.Column("pid", sa.Integer))
    op.add_column("runs", sa.Column("process_started_at", Timestamp))
    op.create_index("ix_runs_state", "runs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_runs_state", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("process_started_at")
        batch.drop_column("pid")
        batch.drop_column("host")
        batch.drop_column("rows_superseded")
