"""Remote commands: send to one node, a list, or every node of a site; wait for each answer; audit.

The answer to ``maskwatch/<site>/<node>/cmd/<name>`` comes on
``.../response/<name>`` with the same ``request_id``. Subscribe to the answers
(:meth:`Commander.listen`) before the client starts: the broker handles a
client's packets in order, so the subscription is active before any command
leaves.

Example::

    commander = Commander(client, timeout_s=5)
    commander.listen("hq")
    client.start(); client.wait_connected(5)
    outcome, = commander.send("hq", ["door-1"], "threshold", {"value": 0.6})
    outcome.status   # CommandStatus.OK, ERROR or TIMEOUT
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from hub.services.discovery import entity_configs
from hub.storage.commands import AuditAnswer, CommandAudit
from hub.storage.database import Store
from hub.storage.nodes import Registry
from shared import topics
from shared.errors import ContractError, MaskwatchError
from shared.logcap import LogCap
from shared.messages import COMMANDS, SENDABLE_COMMANDS, Command, CommandResponse, DesiredConfig, parse, utc_now
from shared.mqtt import MqttClient, Received

log = logging.getLogger(__name__)


class CommandStatus(StrEnum):
    """How a command went for one node, or for all of them (the CLI and the API map it to their codes).

    The value is what the ``commands`` audit stores in ``status``.
    """

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"


@dataclass
class Outcome:
    """The answer of one node to one command (``timeout`` when none came in time)."""

    site: str
    node: str
    name: str
    request_id: str
    status: CommandStatus
    value: Any = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The public JSON form (API ``results``, CLI ``--json``, the audit's ``response``)."""
        return {
            "site": self.site,
            "node": self.node,
            "name": self.name,
            "request_id": self.request_id,
            "status": self.status.value,
            "value": self.value,
            "error": self.error,
        }


@dataclass
class _Pending:
    expected: set[str] | None
    answers: dict[str, CommandResponse] = field(default_factory=dict)
    done: threading.Condition = field(default_factory=threading.Condition)


class UnknownNode(MaskwatchError, LookupError):
    """A command names a node the registry has never seen (send it anyway with ``force``)."""


def hub_retained_topics(site: str, node: str) -> list[str]:
    """The retained topics of one node that the hub publishes (and the broker lets it clear): ``desired``,
    ``summary`` and the node's Home Assistant discovery configs. The node's own retained ``status`` and ``state``
    are the node's to write (deploy/mosquitto/acl)."""
    node_topics = topics.NodeTopics(site, node)
    return [node_topics.desired, node_topics.summary, *entity_configs(site, node)]


def overall_status(outcomes: Sequence[Outcome]) -> CommandStatus:
    """``timeout`` if any node did not answer, else ``error`` if any answered so, else ``ok``."""
    statuses = {o.status for o in outcomes}
    for status in (CommandStatus.TIMEOUT, CommandStatus.ERROR):
        if status in statuses:
            return status
    return CommandStatus.OK


def build_command(name: str, params: dict[str, Any], request_id: str) -> Command:
    """The typed command ``name`` with ``params``, or :class:`ContractError` saying what is wrong."""
    if name not in SENDABLE_COMMANDS:
        raise ContractError(f"unknown command {name!r}: use one of {', '.join(SENDABLE_COMMANDS)}", field="name")
    try:
        return COMMANDS[name].model_validate({**params, "request_id": request_id})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or name
        raise ContractError(f"{name}: {where}: {err['msg']}", field=where) from None


class Commander:
    """Sends commands over MQTT, waits for the answers, records both when a database is given.

    :param client: a connected-or-starting MQTT client (not the manual-ack intake client).
    :param timeout_s: default wait for each answer.
    :param store: where the audit table lives (``None``: no audit).
    :param registry: which nodes of a site answer a site-wide command; also keeps desired config.
    """

    def __init__(
        self, client: MqttClient, *, timeout_s: float, store: Store | None = None, registry: Registry | None = None
    ) -> None:
        self.client = client
        self.timeout_s = timeout_s
        self.audit = CommandAudit(store) if store is not None else None
        self.registry = registry
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self._reject_log = LogCap(log, "malformed answers")

    def listen(self, site: str | None = None) -> None:
        """Subscribe to the answers of the nodes of ``site`` (every site when ``None``)."""
        self.client.subscribe(topics.node_filter("response", site), self._on_response, qos=1)

    def _on_response(self, message: Received) -> None:  # network thread: decode and hand over
        try:
            response = parse(CommandResponse, message.payload)
        except ContractError as exc:
            self._reject_log.warning(exc.reason, "ignoring malformed answer on %s: %s", message.topic, exc)
            return
        with self._lock:
            pending = self._pending.get(response.request_id or "")
        if pending is None:
            log.debug("answer %s on %s matches no pending command", response.request_id, message.topic)
            return
        with pending.done:
            pending.answers[response.node] = response
            pending.done.notify_all()

    def send(
        self,
        site: str,
        nodes: Sequence[str] | None,
        name: str,
        params: dict[str, Any],
        *,
        source: str = "cli",
        timeout_s: float | None = None,
        force: bool = False,
    ) -> list[Outcome]:
        """Send ``name`` with ``params`` to ``nodes`` of ``site`` (``None``: every node) and wait.

        :param force: send to nodes the registry has never seen too (without a registry nothing is checked).
        :raises ContractError: unknown command, bad parameters or bad ids.
        :raises UnknownNode: a node the registry does not know, unless ``force``.
        """
        command = build_command(name, params, uuid.uuid4().hex)
        return self.deliver(site, nodes, command, source=source, timeout_s=timeout_s, force=force)

    def deliver(
        self,
        site: str,
        nodes: Sequence[str] | None,
        command: Command,
        *,
        source: str = "cli",
        timeout_s: float | None = None,
        force: bool = False,
    ) -> list[Outcome]:
        """Send a built ``command`` (any of :data:`COMMANDS`, sendable or not) to ``nodes`` of ``site`` and wait.

        :param force: send to nodes the registry has never seen too (without a registry nothing is checked).
        :raises ContractError: bad ids.
        :raises UnknownNode: a node the registry does not know, unless ``force``.
        """
        topics.validate_id(site, "site")
        nodes = list(dict.fromkeys(topics.validate_id(node, "node") for node in nodes or ()))
        name, request_id = command.name, command.request_id
        if nodes and not force and self.registry is not None:
            unknown = [node for node in nodes if not self.registry.known(site, node)]
            if unknown:
                raise UnknownNode(
                    f"unknown node {', '.join(f'{site}/{node}' for node in unknown)}: the hub has never seen it "
                    "(check the id, or force the command)"
                )
        expected = set(nodes) if nodes else self._site_nodes(site)
        pending = _Pending(expected=expected)
        with self._lock:
            self._pending[request_id] = pending
        audit_ids = self._audit_sent(site, nodes, command, name, source)
        try:
            if nodes:
                for node in nodes:
                    self.client.publish(topics.NodeTopics(site, node).cmd(name), command, qos=1)
            else:
                self.client.publish(topics.site_command(site, name), command, qos=1)
            log.info("sent %s %s to %s/%s", name, request_id, site, ",".join(nodes) if nodes else "all")
            self._wait(pending, timeout_s or self.timeout_s)
        finally:
            with self._lock:
                self._pending.pop(request_id, None)
        outcomes = self._outcomes(site, name, request_id, pending)
        self._audit_answered(audit_ids, nodes, outcomes)
        self._apply_desired(site, command, outcomes)
        return outcomes

    def forget(self, site: str, node: str) -> list[str]:
        """Remove ``site``/``node`` from the registry and clear its hub-owned retained topics
        (:func:`hub_retained_topics`, an empty retained payload each); return the topics cleared.

        :raises UnknownNode: the registry has no such node.
        """
        topics.validate_id(site, "site")
        topics.validate_id(node, "node")
        if self.registry is None or not self.registry.forget(site, node):
            raise UnknownNode(f"unknown node {site}/{node}: nothing to forget")
        cleared = hub_retained_topics(site, node)
        sent = [self.client.publish(topic, b"", qos=1, retain=True) for topic in cleared]
        for topic, info in zip(cleared, sent, strict=True):  # the CLI disconnects next: let the broker have them
            try:
                info.wait_for_publish(self.timeout_s)
            except (RuntimeError, ValueError):
                log.warning("could not clear %s (no broker connection): clear it by hand", topic)
        log.info("forgot node %s/%s, cleared %d retained topics", site, node, len(cleared))
        return cleared

    def _site_nodes(self, site: str) -> set[str] | None:
        """Nodes expected to answer a site-wide command; ``None`` (wait the whole timeout) when unknown."""
        if self.registry is None:
            return None
        return {row.node for row in self.registry.nodes(site) if row.online} or None

    @staticmethod
    def _wait(pending: _Pending, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with pending.done:
            while True:
                if pending.expected is not None and pending.expected <= set(pending.answers):
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                pending.done.wait(remaining)

    @staticmethod
    def _outcomes(site: str, name: str, request_id: str, pending: _Pending) -> list[Outcome]:
        nodes = sorted((pending.expected or set()) | set(pending.answers)) or [topics.ALL_NODES]
        out = []
        for node in nodes:
            answer = pending.answers.get(node)
            if answer is None:
                out.append(Outcome(site, node, name, request_id, CommandStatus.TIMEOUT, error="no answer in time"))
            else:
                out.append(
                    Outcome(site, node, name, request_id, CommandStatus(answer.status), answer.value, answer.error)
                )
        return out

    def _audit_sent(
        self, site: str, nodes: Sequence[str] | None, command: Command, name: str, source: str
    ) -> list[int]:
        if self.audit is None:
            return []
        return self.audit.record_sent(
            request_id=command.request_id,
            site=site,
            nodes=list(nodes or [topics.ALL_NODES]),
            name=name,
            payload=command.model_dump(mode="json", exclude_none=True),
            source=source,
            sent_at=utc_now(),
        )

    def _audit_answered(self, audit_ids: list[int], nodes: Sequence[str] | None, outcomes: list[Outcome]) -> None:
        if self.audit is None or not audit_ids:
            return
        if nodes:  # one row per node
            by_node = {o.node: o for o in outcomes}
            node_outcomes = [(row_id, by_node[node]) for row_id, node in zip(audit_ids, nodes, strict=True)]
            answers = [
                AuditAnswer(row_id, o.status.value, o.to_json(), o.error, answered=o.status != CommandStatus.TIMEOUT)
                for row_id, o in node_outcomes
            ]
        else:  # one row for a site-wide command: summary status, every answer in `response`
            status = overall_status(outcomes)
            errors = "; ".join(f"{o.node}: {o.error}" for o in outcomes if o.error) or None
            answers = [
                AuditAnswer(
                    audit_ids[0],
                    status.value,
                    {"answers": [o.to_json() for o in outcomes]},
                    errors,
                    answered=status != CommandStatus.TIMEOUT,
                )
            ]
        self.audit.record_answers(answers, utc_now())

    def _apply_desired(self, site: str, command: Command, outcomes: list[Outcome]) -> None:
        """Keep what the command changes as the desired config of every node that did not refuse it
        (``ok`` or no answer yet: an absent node applies it when it reconnects), and publish it retained."""
        changes = command.desired_changes()
        if not changes or self.registry is None:
            return
        targets = [o.node for o in outcomes if o.status != CommandStatus.ERROR and o.node != topics.ALL_NODES]
        if not targets:
            return
        desired = self.registry.merge_desired(site, targets, changes)
        for node, config in desired.items():
            self.client.publish(
                topics.NodeTopics(site, node).desired, DesiredConfig.model_validate(config), qos=1, retain=True
            )
