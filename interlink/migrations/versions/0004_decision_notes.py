"""`runs.decision` and `runs.notes` (ffe20d7): a person's approval or rejection, and the warnings a run raised.

Revision ID: 0004_decision_notes
Revises: 0003_circuits
"""

import sqlalchemy as sa
from alembic import op

from interlink.migrations import has_column

revision = "0004_decision_notes"
down_revision = "0003_circuits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not has_column("runs", "decision"):
        op.add_column("runs", sa.Column("decision", sa.String(1000)))
    if not has_column("runs", "notes"):
        op.add_column("runs", sa.Column("notes", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("notes")
        batch.drop_column("decision")
