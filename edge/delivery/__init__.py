"""Delivery: the persistent outbox and its courier, JPEG snapshots, statistics and the live preview."""
