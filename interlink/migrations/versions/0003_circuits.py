"""`runs.circuits` (27594f7): the circuit breakers that opened during a run.

Revision ID: 0003_circuits
Revises: 0002_delivered
"""

import sqlalchemy as sa
from alembic import op

from interlink.migrations import has_column

revision = "0003_circuits"
down_revision = "0002_delivered"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not has_column("runs", "circuits"):
        op.add_column("runs", sa.Column("circuits", sa.String(500)))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("circuits")
