"""The delivered-hash store `delivered` (f539834): what a REST target was last sent, per record.

Revision ID: 0002_delivered
Revises: 0001_first_schema
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from interlink.migrations import has_table

revision = "0002_delivered"
down_revision = "0001_first_schema"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    if not has_table("delivered"):
        op.create_table(
            "delivered",
            sa.Column("integration", sa.String(100), primary_key=True),
            sa.Column("record_key", sa.String(200), primary_key=True),
            sa.Column("row_hash", sa.String(16), nullable=False),
            sa.Column("delivered_at", Timestamp, nullable=False),
        )


def downgrade() -> None:
    op.drop_table("delivered")
