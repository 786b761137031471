"""Configuration of the hub: one typed tree, loaded by :func:`shared.config.load_config`.

Example ``hub.yaml``::

    broker: {host: 10.0.0.5, port: 1883}
    db_url: sqlite:////var/lib/maskwatch/maskwatch.db
    sites: [hq]
    ingest: {batch_size: 500, batch_ms: 50}
    alerts: {cooldown_s: 60, offline_after_s: 120}
    retention: {days: 30}
    clock: {max_skew_s: 300}
    auth:
      tokens:
        - {name: ops, sha256: 5e88...}   # from 'maskwatch hub --new-token ops'
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from shared.config import BrokerConfig, Identifier, StrictModel
from shared.vocabulary import Probability


class HttpConfig(StrictModel):
    """Where the REST API listens, and how others reach it (for snapshot links in alerts)."""

    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 to serve the network")
    port: int = Field(8080, ge=0, le=65535, description="0 picks a free port")
    public_url: str | None = Field(None, description="base URL used in alert snapshot links, e.g. http://hub:8080")


class IngestConfig(StrictModel):
    """How events are batched into transactions."""

    batch_size: int = Field(500, ge=1, le=100_000, description="commit after this many messages")
    batch_ms: int = Field(50, ge=1, le=60_000, description="... or after this many milliseconds")
    queue_max: int = Field(50_000, ge=100, description="messages waiting for the writer before back-pressure")
    share_group: Identifier | None = Field(
        None,
        description="MQTT 5 shared-subscription group: give every hub of a site the same group to split the "
        "load. Unset (the default): a plain persistent subscription, which, unlike a $share one "
        "in Mosquitto 2.0, survives a broker restart (docs/scaling.md)",
    )
    max_snapshot_bytes: int = Field(2_000_000, ge=1024, description="larger snapshots are rejected")
    writer_process: bool = Field(
        True,
        description="validate and write batches in a child process, so the database work runs on another "
        "core than the MQTT network thread; false: in the hub process (one core)",
    )


class AlertConfig(StrictModel):
    """When alerts are raised."""

    cooldown_s: float = Field(60.0, ge=0, description="per node: no_mask alerts closer than this are suppressed")
    min_face_score: Probability | None = Field(
        None,
        description="no_mask events whose face score (the node's face verification) is lower "
        "raise no alert; events without a face score still do (default: off)",
    )
    offline_after_s: float = Field(120.0, gt=0, description="alert when a node has been offline this long")
    check_every_s: float = Field(5.0, gt=0, description="how often offline nodes are checked")


class RetentionConfig(StrictModel):
    """What is deleted, and when."""

    days: float = Field(30.0, gt=0, description="events, snapshots, alerts and rejected payloads older than this")
    interval_s: float = Field(3600.0, gt=0, description="how often the hub prunes")
    rejected_max_rows: int = Field(10_000, ge=0, description="bound of the rejected-payload table (0: keep none)")


#: Default of ``clock.max_skew_s``, seconds.
DEFAULT_MAX_SKEW_S = 300.0


class ClockConfig(StrictModel):
    """How far a node's clock may be off the hub's before its messages are flagged (the hub's clock orders,
    prunes and times alerts; the node's ``ts`` is kept as data)."""

    max_skew_s: float = Field(
        DEFAULT_MAX_SKEW_S,
        gt=0,
        description="an event or stats message whose ts differs from the hub's clock by more than this is "
        "flagged clock_skewed, and counted in maskwatch_clock_skew_events_total (an event that is only late, "
        "from a node whose clock was measured within this, is not)",
    )


class ApiToken(StrictModel):
    """An API token, stored as its SHA-256 (the token itself is never written down)."""

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(description="hex SHA-256 of the token")

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        value = value.lower().removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", value):
            raise ValueError("must be 64 hex digits (sha256 of the token)")
        return value


class AuthConfig(StrictModel):
    """API authentication. With no token configured the API is open (the hub warns at start)."""

    tokens: list[ApiToken] = Field(default_factory=list)
    public_healthz: bool = Field(True, description="/healthz answers without a token")
    public_metrics: bool = Field(False, description="/metrics answers without a token")
    command_rate_per_min: int = Field(30, ge=1, description="commands per minute per token (or client address)")

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)


def hash_token(token: str) -> str:
    """The hex SHA-256 stored in the config for ``token``."""
    return hashlib.sha256(token.encode()).hexdigest()


class HomeAssistantConfig(StrictModel):
    """Home Assistant MQTT discovery (off unless ``enabled``); see :mod:`hub.services.discovery`."""

    enabled: bool = Field(False, description="publish discovery configs and node summaries")
    window_s: float = Field(3600.0, gt=0, description="compliance sensor window, seconds")
    summary_every_s: float = Field(30.0, gt=0, description="re-publish summaries this often")
    open_ttl_s: float = Field(120.0, gt=0, description="an event silent this long no longer counts as in view")


class HubConfig(StrictModel):
    """Everything the hub needs; see the module docstring for an example file."""

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    db_url: str = Field("sqlite:///maskwatch.db", description="any SQLAlchemy URL (sqlite, postgresql...)")
    hub_id: Identifier = Field("hub", description="names this hub's MQTT session: maskwatch-hub-<hub_id>")
    sites: list[Identifier] = Field(default_factory=list, description="sites to follow; empty: every site")
    snapshot_dir: Path = Field(Path("snapshots"), description="where snapshot JPEGs are written")
    command_timeout_s: float = Field(5.0, gt=0, le=300, description="how long to wait for a node's answer")
    http: HttpConfig = Field(default_factory=HttpConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    alerts: AlertConfig = Field(default_factory=AlertConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)

    @model_validator(mode="after")
    def _site_list_unique(self) -> HubConfig:
        if len(set(self.sites)) != len(self.sites):
            raise ValueError("sites: each site once")
        return self
