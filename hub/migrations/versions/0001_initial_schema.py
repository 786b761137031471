"""Initial schema: events and their raw messages, snapshots, nodes, alerts, command audit,
rejected payloads, counters.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import hub.storage.rows

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("ts", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("snapshot_url", sa.String(length=512), nullable=True),
        sa.Column("message", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alerts_ts"), ["ts"], unique=False)

    op.create_table(
        "commands",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False, comment="cli, api:<token name>..."),
        sa.Column("sent_at", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False, comment="ok, error or timeout"),
        sa.Column("answered_at", hub.storage.rows.UtcDateTime(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commands_request_id"), ["request_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_sent_at"), ["sent_at"], unique=False)

    op.create_table(
        "counters",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "event_messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("ts", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    with op.batch_alter_table("event_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_event_messages_event_id"), ["event_id"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("first_seen", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.Column("last_seen", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False, comment="label of the latest message"),
        sa.Column("best_score", sa.Float(), nullable=False, comment="highest score of the final label"),
        sa.Column("mask_score", sa.Float(), nullable=True, comment="highest 'mask' score seen"),
        sa.Column("no_mask_score", sa.Float(), nullable=True, comment="highest 'no_mask' score seen"),
        sa.Column("box", sa.JSON(), nullable=False, comment="[x, y, w, h] of the latest message"),
        sa.Column("angle", sa.Float(), nullable=True),
        sa.Column("frames", sa.Integer(), nullable=True),
        sa.Column("started", sa.Boolean(), nullable=False, comment="the 'new' message was received"),
        sa.Column("ended_at", hub.storage.rows.UtcDateTime(), nullable=True, comment="time of the 'end' message"),
        sa.Column("messages", sa.Integer(), nullable=False, comment="distinct messages received"),
        sa.Column("snapshot_expected", sa.Boolean(), nullable=False),
        sa.Column("alerted", sa.Boolean(), nullable=False),
        sa.Column(
            "received_at", hub.storage.rows.UtcDateTime(), nullable=False, comment="when the hub first stored it"
        ),
        sa.Column("updated_at", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_first_seen"), ["first_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_label"), ["label"], unique=False)
        batch_op.create_index("ix_events_site_node_first_seen", ["site", "node", "first_seen"], unique=False)

    op.create_table(
        "nodes",
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column(
            "status_at", hub.storage.rows.UtcDateTime(), nullable=True, comment="when online/offline last changed"
        ),
        sa.Column("last_seen", hub.storage.rows.UtcDateTime(), nullable=True),
        sa.Column("state", sa.JSON(), nullable=True),
        sa.Column("stats", sa.JSON(), nullable=True),
        sa.Column("model", sa.String(length=128), nullable=True),
        sa.Column("desired", sa.JSON(), nullable=True, comment="desired config, published retained"),
        sa.Column("offline_alerted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("site", "node"),
    )
    op.create_table(
        "rejected",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("received_at", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.Column("topic", sa.String(length=512), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("field", sa.String(length=256), nullable=True),
        sa.Column("error", sa.String(length=1024), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rejected", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rejected_received_at"), ["received_at"], unique=False)

    op.create_table(
        "snapshots",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("node", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("received_at", hub.storage.rows.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_snapshots_received_at"), ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("snapshots", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_snapshots_received_at"))

    op.drop_table("snapshots")
    with op.batch_alter_table("rejected", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_received_at"))

    op.drop_table("rejected")
    op.drop_table("nodes")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_site_node_first_seen")
        batch_op.drop_index(batch_op.f("ix_events_label"))
        batch_op.drop_index(batch_op.f("ix_events_first_seen"))

    op.drop_table("events")
    with op.batch_alter_table("event_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_messages_event_id"))

    op.drop_table("event_messages")
    op.drop_table("counters")
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_sent_at"))
        batch_op.drop_index(batch_op.f("ix_commands_request_id"))

    op.drop_table("commands")
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_alerts_ts"))

    op.drop_table("alerts")
