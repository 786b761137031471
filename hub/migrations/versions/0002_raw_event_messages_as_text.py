"""Raw event messages kept as the text received (no JSON decode/encode on the ingest path).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event_messages", schema=None) as batch_op:
        batch_op.alter_column(
            "payload",
            existing_type=sa.JSON(),
            type_=sa.Text(),
            existing_nullable=False,
            comment="the JSON exactly as received",
            postgresql_using="payload::text",
        )


def downgrade() -> None:
    with op.batch_alter_table("event_messages", schema=None) as batch_op:
        batch_op.alter_column(
            "payload",
            existing_type=sa.Text(),
            type_=sa.JSON(),
            existing_nullable=False,
            comment=None,
            postgresql_using="payload::json",
        )
