"""Every MQTT topic of Maskwatch is built and parsed here, and nowhere else.

Layout (``<site>`` and ``<node>`` match ``[a-z0-9_-]+``)::

    maskwatch/<site>/<node>/status            retained online|offline (Last Will)
    maskwatch/<site>/<node>/events            QoS 1 detection events
    maskwatch/<site>/<node>/state             retained node state
    maskwatch/<site>/<node>/stats             periodic statistics
    maskwatch/<site>/<node>/snapshot/<id>     JPEG bytes for an event
    maskwatch/<site>/<node>/cmd/<name>        a command to the node
    maskwatch/<site>/<node>/response/<name>   the node's answer
    maskwatch/<site>/<node>/desired           retained desired config from the hub
    maskwatch/<site>/<node>/summary           retained faces in view and compliance, from the hub
    maskwatch/<site>/<node>/ack               a hub's acknowledgement of the node's stored events
    maskwatch/<site>/<node>/model/<sha256>    binary chunks of a model file pushed to the node
    maskwatch/hubs/<hub>                      retained online|offline of one hub (its Last Will)
    maskwatch/<site>/all/cmd/<name>           a command to every node of the site
    maskwatch/<site>/alerts                   alerts published by the hub

Example::

    >>> t = NodeTopics("hq", "door-1")
    >>> t.events
    'maskwatch/hq/door-1/events'
    >>> parse_topic(t.cmd("servo"))
    TopicInfo(site='hq', node='door-1', kind='cmd', name='servo')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from shared.errors import ContractError

ROOT: Final = "maskwatch"
ALL_NODES: Final = "all"
#: The level of hub presence topics, reserved as a site id.
HUBS: Final = "hubs"
ID_PATTERN: Final = re.compile(r"^[a-z0-9_-]{1,64}$")
EVENT_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
#: A sha256 digest as it names a model file's chunk topic: 64 lowercase hex digits.
SHA256_PATTERN: Final = re.compile(r"^[0-9a-f]{64}$")

#: Per-node topic kinds that carry no sub-name.
NODE_KINDS: Final = ("status", "events", "state", "stats", "desired", "summary", "ack")
#: Per-node topic kinds followed by one more level (event id or command name).
NAMED_KINDS: Final = ("snapshot", "cmd", "response", "model")

HA_DISCOVERY_PREFIX: Final = "homeassistant"


def validate_id(value: object, what: str = "id") -> str:
    """Return ``value`` if it is a valid site or node id, else raise :class:`ContractError`."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        raise ContractError(f"invalid {what} {value!r}: must match [a-z0-9_-]{{1,64}}", field=what, reason="topic")
    if what == "site" and value == HUBS:
        raise ContractError(f"{HUBS!r} is reserved: maskwatch/{HUBS}/<hub> is hub presence", field=what, reason="topic")
    return value


def validate_sha256(value: object) -> str:
    """Return ``value`` if it is a sha256 hex digest (lowercase), else raise :class:`ContractError`."""
    if not isinstance(value, str) or not SHA256_PATTERN.fullmatch(value):
        raise ContractError(
            f"invalid sha256 {value!r}: must be 64 lowercase hex digits", field="sha256", reason="topic"
        )
    return value


def validate_event_id(value: object) -> str:
    """Return ``value`` if it is usable as an event id inside a topic level."""
    if not isinstance(value, str) or not EVENT_ID_PATTERN.fullmatch(value):
        raise ContractError(f"invalid event id {value!r}", field="id", reason="topic")
    return value


@dataclass(frozen=True)
class NodeTopics:
    """The topics of one node; ``node`` may be ``"all"`` only for :meth:`cmd`."""

    site: str
    node: str

    def __post_init__(self) -> None:
        validate_id(self.site, "site")
        validate_id(self.node, "node")

    @property
    def base(self) -> str:
        return f"{ROOT}/{self.site}/{self.node}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def desired(self) -> str:
        return f"{self.base}/desired"

    @property
    def summary(self) -> str:
        return f"{self.base}/summary"

    @property
    def ack(self) -> str:
        return f"{self.base}/ack"

    def snapshot(self, event_id: str) -> str:
        return f"{self.base}/snapshot/{validate_event_id(event_id)}"

    def model(self, sha256: str) -> str:
        """Chunks of the model file whose sha256 is ``sha256``."""
        return f"{self.base}/model/{validate_sha256(sha256)}"

    @property
    def model_filter(self) -> str:
        """Filter for the chunks of every model file pushed to this node."""
        return f"{self.base}/model/+"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{_command_level(name)}"

    def response(self, name: str) -> str:
        return f"{self.base}/response/{_command_level(name)}"

    @property
    def cmd_filter(self) -> str:
        """Filter for every command addressed to this node."""
        return f"{self.base}/cmd/+"

    @property
    def site_cmd_filter(self) -> str:
        """Filter for every command addressed to the whole site."""
        return f"{ROOT}/{self.site}/{ALL_NODES}/cmd/+"


def _command_level(name: object) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_-]{1,32}", name):
        raise ContractError(f"invalid command name {name!r}", field="name", reason="topic")
    return name


def site_command(site: str, name: str) -> str:
    """Topic for a command to every node of ``site``."""
    return f"{ROOT}/{validate_id(site, 'site')}/{ALL_NODES}/cmd/{_command_level(name)}"


def alerts(site: str) -> str:
    """Topic on which the hub publishes alerts for ``site``."""
    return f"{ROOT}/{validate_id(site, 'site')}/alerts"


def hub_presence(hub_id: str) -> str:
    """Retained ``online``/``offline`` of one hub (Sparkplug's primary host STATE, one per hub)."""
    return f"{ROOT}/{HUBS}/{validate_id(hub_id, 'hub')}"


#: Filter for the presence of every hub.
HUB_PRESENCE_FILTER: Final = f"{ROOT}/{HUBS}/+"


def parse_hub_presence(topic: str) -> str:
    """The hub id of a presence topic, or raise :class:`ContractError`.

    >>> parse_hub_presence(hub_presence("hub-a"))
    'hub-a'
    """
    parts = topic.split("/")
    if len(parts) != 3 or parts[:2] != [ROOT, HUBS]:
        raise ContractError(f"not a hub presence topic: {topic!r}", field="topic", reason="topic")
    return validate_id(parts[2], "hub")


def node_filter(kind: str, site: str | None = None) -> str:
    """Wildcard filter for one kind of per-node topic over one site (or every site)."""
    site_level = "+" if site is None else validate_id(site, "site")
    if kind in NAMED_KINDS:
        return f"{ROOT}/{site_level}/+/{kind}/+"
    if kind in NODE_KINDS:
        return f"{ROOT}/{site_level}/+/{kind}"
    raise ContractError(f"unknown topic kind {kind!r}", field="kind", reason="topic")


def alerts_filter(site: str | None = None) -> str:
    """Filter for the alerts of one site or every site."""
    return f"{ROOT}/{'+' if site is None else validate_id(site, 'site')}/alerts"


def shared_subscription(group: str, topic_filter: str) -> str:
    """MQTT 5 shared subscription ``$share/<group>/<filter>`` so several hubs split the load."""
    return f"$share/{validate_id(group, 'group')}/{topic_filter}"


def ha_discovery(component: str, object_id: str) -> str:
    """Home Assistant discovery config topic for one entity."""
    return f"{HA_DISCOVERY_PREFIX}/{component}/{object_id}/config"


HA_STATUS: Final = f"{HA_DISCOVERY_PREFIX}/status"


#: How the last level of each named kind is checked (commands and responses: a command name).
_NAME_CHECKS = {"snapshot": validate_event_id, "model": validate_sha256}


@dataclass(frozen=True)
class TopicInfo:
    """What a Maskwatch topic addresses: ``kind`` is a node kind, ``alerts`` or ``cmd``."""

    site: str
    node: str | None
    kind: str
    name: str | None = None


def parse_topic(topic: str) -> TopicInfo:
    """Split a Maskwatch topic into its parts, or raise :class:`ContractError`."""
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != ROOT:
        raise ContractError(f"not a maskwatch topic: {topic!r}", field="topic", reason="topic")
    site = validate_id(parts[1], "site")
    if len(parts) == 3 and parts[2] == "alerts":
        return TopicInfo(site=site, node=None, kind="alerts")
    node = validate_id(parts[2], "node")
    if len(parts) == 4 and parts[3] in NODE_KINDS and node != ALL_NODES:
        return TopicInfo(site=site, node=node, kind=parts[3])
    if len(parts) == 5 and parts[3] in NAMED_KINDS:
        if node == ALL_NODES and parts[3] != "cmd":
            raise ContractError(f"'all' only takes commands: {topic!r}", field="topic", reason="topic")
        name = _NAME_CHECKS.get(parts[3], _command_level)(parts[4])
        return TopicInfo(site=site, node=node, kind=parts[3], name=name)
    raise ContractError(f"unknown maskwatch topic: {topic!r}", field="topic", reason="topic")
