"""Model rollout from the hub side: push a classifier file to nodes, optionally canaries first.

The file travels as MQTT chunks on ``maskwatch/<site>/<node>/model/<sha256>`` (:mod:`shared.model_transfer`),
then the ``model`` command (:class:`~shared.messages.ModelCommand`) asks the node to take it; the node answers
once the model is in use or refused (rolled back). The chunks reuse the broker's login and per-node ACL and need
no route from the node to the hub's HTTP port. :class:`FleetStates` follows the nodes' retained ``state`` and
``status``: it lists the model of each node and tells whether canaries stay healthy.

Example::

    states = FleetStates(client, "hq")
    rollout = Rollout(client, Commander(client, timeout_s=120), states)
    outcomes = rollout.push("hq", ["door-1"], "mask_v2", Path("mask_v2.tflite").read_bytes())
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from hub.services.commands import Commander, CommandStatus, Outcome
from shared import topics
from shared.errors import ContractError
from shared.messages import AVAILABILITY, ModelCommand, NodeState, parse
from shared.model_transfer import sha256_hex, split
from shared.mqtt import MqttClient, Received

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NodeModel:
    """What one node reports about its model."""

    node: str
    online: bool | None
    model: str | None
    sha256: str | None
    error: str | None


class FleetStates:
    """The retained ``state`` and ``status`` of every node of ``site``, as they arrive (subscribes at once).

    :param client: an MQTT client (subscriptions are renewed on every connect).
    :param site: the site followed.
    """

    def __init__(self, client: MqttClient, site: str) -> None:
        self.site = topics.validate_id(site, "site")
        self._states: dict[str, NodeState] = {}
        self._online: dict[str, bool] = {}
        self._lock = threading.Lock()
        client.subscribe(topics.node_filter("state", site), self._on_state, qos=1)
        client.subscribe(topics.node_filter("status", site), self._on_status, qos=1)

    def _on_state(self, message: Received) -> None:  # network thread: decode and store
        try:
            state = parse(NodeState, message.payload)
        except ContractError as exc:
            log.warning("ignoring state on %s: %s", message.topic, exc)
            return
        with self._lock:
            self._states[state.node] = state

    def _on_status(self, message: Received) -> None:
        node = topics.parse_topic(message.topic).node
        if node is not None and message.payload in AVAILABILITY:
            with self._lock:
                self._online[node] = AVAILABILITY[message.payload]

    def nodes(self) -> list[NodeModel]:
        """Every node seen so far, by id."""
        with self._lock:
            names = sorted(set(self._states) | set(self._online))
            return [self._model(node) for node in names]

    def node(self, node: str) -> NodeModel:
        """What ``node`` reports now (``None`` fields when nothing came yet)."""
        with self._lock:
            return self._model(node)

    def _model(self, node: str) -> NodeModel:
        state = self._states.get(node)
        return NodeModel(
            node,
            self._online.get(node),
            state.model if state else None,
            state.model_sha256 if state else None,
            state.model_error if state else None,
        )


def unhealthy(report: NodeModel, sha256: str) -> str | None:
    """Why a node that took model ``sha256`` is not healthy now, or ``None``."""
    if report.online is False:
        return "offline"
    if report.sha256 != sha256:
        return f"runs {report.model or 'an unknown model'}, not {sha256[:12]}"
    if report.error:
        return report.error
    return None


class Rollout:
    """Pushes a model file to nodes and waits for their answers.

    :param client: a started MQTT client.
    :param commander: sends the ``model`` command and collects the answers (its ``listen`` must be called).
    :param states: the site's node states (canary health).
    :param transfer_timeout_s: how long a node waits for all chunks.
    :param probation_s: how long a node watches its capacity (frames per second of processing) after the swap.
    """

    def __init__(
        self,
        client: MqttClient,
        commander: Commander,
        states: FleetStates,
        *,
        transfer_timeout_s: float = 60.0,
        probation_s: float = 5.0,
    ) -> None:
        self.client = client
        self.commander = commander
        self.states = states
        self.transfer_timeout_s = transfer_timeout_s
        self.probation_s = probation_s

    def push(self, site: str, nodes: Sequence[str], name: str, data: bytes, timeout_s: float) -> list[Outcome]:
        """Send the file to each of ``nodes`` and the ``model`` command; one outcome per node.

        :raises ContractError: bad ids or model name, or a file too big.
        """
        sha256 = sha256_hex(data)
        command = ModelCommand(
            request_id=uuid.uuid4().hex,
            model=name,
            sha256=sha256,
            size=len(data),
            transfer_timeout_s=self.transfer_timeout_s,
            probation_s=self.probation_s,
        )
        chunks = split(data)
        for node in nodes:
            topic = topics.NodeTopics(site, node).model(sha256)
            for chunk in chunks:
                self.client.publish(topic, chunk, qos=1)
        log.info("pushing %s (%d bytes, %d chunks) to %s/%s", name, len(data), len(chunks), site, ",".join(nodes))
        return self.commander.deliver(site, nodes, command, source="cli", timeout_s=timeout_s)

    def canary(
        self,
        site: str,
        nodes: Sequence[str],
        name: str,
        data: bytes,
        *,
        canaries: int,
        wait_s: float,
        timeout_s: float,
        stop: threading.Event | None = None,
    ) -> list[Outcome]:
        """Push to the first ``canaries`` of ``nodes``; the rest follow only if every canary answered ``ok`` and
        stayed healthy (online, on the new model, no model error) for ``wait_s``."""
        first, rest = list(nodes[:canaries]), list(nodes[canaries:])
        outcomes = self.push(site, first, name, data, timeout_s)
        if not rest:
            return outcomes
        failed = [o for o in outcomes if o.status != CommandStatus.OK]
        reason = (
            "canary " + ", ".join(f"{o.node} {o.status.value}" for o in failed)
            if failed
            else self._watch(first, sha256_hex(data), wait_s, stop or threading.Event())
        )
        if reason is None:
            return outcomes + self.push(site, rest, name, data, timeout_s)
        log.warning("model %s not pushed to %s: %s", name, ",".join(rest), reason)
        return outcomes + [
            Outcome(site, node, ModelCommand.name, "", CommandStatus.ERROR, error=f"not pushed: {reason}")
            for node in rest
        ]

    def _watch(self, canaries: list[str], sha256: str, wait_s: float, stop: threading.Event) -> str | None:
        """Why a canary became unhealthy within ``wait_s``, or ``None`` if all stayed healthy.

        A canary counts once its state reports the new model (the state follows the answer); one that never
        does within ``wait_s`` is unhealthy.
        """
        deadline = time.monotonic() + wait_s
        reported: set[str] = set()
        while True:
            last = time.monotonic() >= deadline or stop.is_set()
            for node in canaries:
                report = self.states.node(node)
                if report.sha256 == sha256:
                    reported.add(node)
                why = unhealthy(report, sha256)
                if why is not None and (node in reported or last):
                    return f"canary {node} unhealthy: {why}"
            if last:
                return None
            stop.wait(min(0.2, max(0.0, deadline - time.monotonic())))
