"""The webhook event store `webhook_events` (9c189b8): signed events received from push sources.

Revision ID: 0005_webhook_events
Revises: 0004_decision_notes
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from interlink.migrations import has_table

revision = "0005_webhook_events"
down_revision = "0004_decision_notes"
branch_labels = None
depends_on = None

Timestamp = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    if not has_table("webhook_events"):
        op.create_table(
            "webhook_events",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("integration", sa.String(100), nullable=False),
            sa.Column("event_id", sa.String(200), nullable=False),
            sa.Column("received_at", Timestamp, nullable=False),
            sa.Column("payload", sa.JSON, nullable=False),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("flow_run_id", sa.String(36)),
            sa.Column("error", sa.Text),
            sa.UniqueConstraint("integration", "event_id"),
        )


def downgrade() -> None:
    op.drop_table("webhook_events")
