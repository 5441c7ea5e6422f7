"""`runs.trace_id`: the run's OpenTelemetry trace, so an operator goes from a ledger row to its trace.

Revision ID: 0009_run_trace
Revises: 0008_integration_facts
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_run_trace"
down_revision = "0008_integration_facts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trace_id", sa.String(32)))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("trace_id")
