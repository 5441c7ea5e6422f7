"""`integration_facts`: what each integration's latest run said about itself (the connections it uses, the fields
it masks), so the read-only commands need not import integrations (`interlink/integration_facts.py`).

Revision ID: 0008_integration_facts
Revises: 0007_run_attempts
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0008_integration_facts"
down_revision = "0007_run_attempts"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "integration_facts",
        sa.Column("integration", sa.String(100), primary_key=True),
        sa.Column("connections", sa.JSON, nullable=False),
        sa.Column("masked", sa.JSON, nullable=False),
        sa.Column("recorded_at", Timestamp, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("integration_facts")
