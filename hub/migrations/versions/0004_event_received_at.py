"""Hub-side time: events are listed and pruned by the hub's ``received_at`` (indexed), and flagged when the node's
clock disagrees with the hub's (``events.clock_skewed``); nodes keep their measured clock offset
(``nodes.clock_offset_s``, ``nodes.clock_skewed``) and how many of their event messages were skewed.

``events.received_at`` exists since 0001 (the hub's time of the first receipt); rows where it is missing are
backfilled from the node's ``first_seen``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE events SET received_at = first_seen WHERE received_at IS NULL")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "clock_skewed",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
                comment="a message's ts differed from the hub's clock by more than clock.max_skew_s",
            )
        )
        batch_op.create_index(batch_op.f("ix_events_received_at"), ["received_at"], unique=False)
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "clock_offset_s",
                sa.Float(),
                nullable=True,
                comment="node clock minus hub clock at its last stats message, seconds",
            )
        )
        batch_op.add_column(
            sa.Column(
                "clock_skewed",
                sa.Boolean(),
                nullable=False,
                server_default=sa.false(),
                comment="|clock_offset_s| exceeds clock.max_skew_s",
            )
        )
        batch_op.add_column(
            sa.Column(
                "clock_skewed_events",
                sa.BigInteger(),
                nullable=False,
                server_default="0",
                comment="event messages whose ts was off the hub's clock",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("clock_skewed_events")
        batch_op.drop_column("clock_skewed")
        batch_op.drop_column("clock_offset_s")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_received_at"))
        batch_op.drop_column("clock_skewed")
