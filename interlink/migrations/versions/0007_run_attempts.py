"""One ledger row per Prefect flow run, and one state name everywhere.

- `runs.attempts`: how many attempts (flow retries) the flow run made; a later attempt continues the row;
- `runs.flow_run_id` is indexed, as every run start looks for an earlier attempt's row;
- a completed run that dead-lettered rows is QUARANTINED, as Prefect names its state: older rows are renamed
  (the downgrade names them COMPLETED again). Rows older attempts left stay as they are, one per attempt.

Revision ID: 0007_run_attempts
Revises: 0006_run_process
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_run_attempts"
down_revision = "0006_run_process"
branch_labels = None
depends_on = None

runs = sa.table("runs", sa.column("state", sa.String), sa.column("rows_quarantined", sa.Integer))


def upgrade() -> None:
    op.add_column("runs", sa.Column("attempts", sa.Integer, nullable=False, server_default="1"))
    op.create_index("ix_runs_flow_run_id", "runs", ["flow_run_id"])
    op.execute(runs.update().where(runs.c.state == "COMPLETED", runs.c.rows_quarantined > 0).values(state="QUARANTINED"))


def downgrade() -> None:
    op.execute(runs.update().where(runs.c.state == "QUARANTINED").values(state="COMPLETED"))
    op.drop_index("ix_runs_flow_run_id", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("attempts")
