"""What the node knows about acknowledgements: its unacknowledged window and whether a hub is online.

:class:`AckTracker` remembers each published outbox message until it is acknowledged, and when it is due
again: ``resend_after_s`` after it was published, doubling per attempt up to ``resend_max_s``. A reconnect
(or a hub coming online) makes everything due at once. :class:`HubPresence` follows the retained
``maskwatch/hubs/<hub>`` messages, Sparkplug's primary host STATE: the node drains its outbox only while
at least one hub is ``online``.

Example::

    >>> tracker = AckTracker(resend_after_s=2, resend_max_s=5)
    >>> tracker.sent(1, now=0.0); tracker.due(1, now=1.0), tracker.due(1, now=2.0)
    (False, True)
    >>> tracker.sent(1, now=2.0); tracker.due(1, now=5.9), tracker.due(1, now=6.0)
    (False, True)
    >>> tracker.rewind(); tracker.due(1, now=2.1), len(tracker)
    (True, 1)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from shared.errors import ContractError
from shared.messages import AVAILABILITY, MAX_ERROR_CHARS, Event
from shared.mqtt import Received
from shared.topics import HUB_PRESENCE_FILTER, parse_hub_presence

log = logging.getLogger(__name__)


@dataclass
class _Sent:
    due_at: float
    attempts: int


class AckTracker:
    """Outbox messages published and not yet acknowledged, each with the time it is due again.

    Used by the delivery thread only (not thread-safe).

    :param resend_after_s: first timeout before a message is published again.
    :param resend_max_s: cap of the timeout, which doubles with every attempt.
    """

    def __init__(self, resend_after_s: float, resend_max_s: float) -> None:
        self.resend_after_s = resend_after_s
        self.resend_max_s = max(resend_max_s, resend_after_s)
        self._sent: dict[int, _Sent] = {}

    def sent(self, seq: int, now: float) -> None:
        """``seq`` was just published (again)."""
        attempts = self._sent[seq].attempts + 1 if seq in self._sent else 1
        timeout = min(self.resend_after_s * 2 ** (attempts - 1), self.resend_max_s)
        self._sent[seq] = _Sent(due_at=now + timeout, attempts=attempts)

    def due(self, seq: int, now: float) -> bool:
        """Whether ``seq`` should be published now (never published, or its timeout passed)."""
        entry = self._sent.get(seq)
        return entry is None or entry.due_at <= now

    def waiting(self, now: float) -> int:
        """Messages published whose timeout has not passed yet (the in-flight window)."""
        return sum(1 for entry in self._sent.values() if entry.due_at > now)

    def forget(self, seq: int) -> None:
        """``seq`` was acknowledged (or dropped)."""
        self._sent.pop(seq, None)

    def forget_ranges(self, ranges: list[tuple[int, int]]) -> None:
        """Every ``seq`` within the inclusive ``ranges`` was acknowledged."""
        for seq in [seq for seq in self._sent if any(first <= seq <= last for first, last in ranges)]:
            del self._sent[seq]

    def rewind(self) -> None:
        """Everything unacknowledged is due now (after a reconnect); the backoff of each is kept."""
        for entry in self._sent.values():
            entry.due_at = 0.0

    def __len__(self) -> int:
        return len(self._sent)


class HubPresence:
    """Which hubs are online, from their retained presence messages.

    :param on_online: called (on the network thread: enqueue only) when the first hub comes online.
    """

    def __init__(self, on_online: Callable[[], None] = lambda: None) -> None:
        self._hubs: dict[str, bool] = {}
        self._lock = threading.Lock()
        self._on_online = on_online

    def receive(self, message: Received) -> None:
        """Handler of ``maskwatch/hubs/+`` (network thread)."""
        try:
            hub = parse_hub_presence(message.topic)
        except ContractError as exc:
            log.warning("ignored hub presence: %s", exc)
            return
        if message.payload not in AVAILABILITY and message.payload != b"":  # b"": the retained message was cleared
            log.warning("ignored hub presence of %s: %r is neither online nor offline", hub, message.payload[:32])
            return
        with self._lock:
            was_online = any(self._hubs.values())
            self._hubs[hub] = AVAILABILITY.get(message.payload, False)
            now_online = any(self._hubs.values())
        if now_online != was_online:
            log.info(
                "hub %s is %s: %s",
                hub,
                "online" if self._hubs[hub] else "offline",
                "delivering the outbox" if now_online else "keeping events in the outbox",
            )
        if now_online and not was_online:
            self._on_online()

    @property
    def online(self) -> bool:
        """At least one hub is online."""
        with self._lock:
            return any(self._hubs.values())


class DeliveryStatus:
    """Why a node's events are not getting through, in words for its stats, state and log.

    :param refusals: the MQTT client's refusals (cause -> reason), see :attr:`shared.mqtt.MqttClient.refusals`.
    :param presence: the hubs' presence (``None`` with ``delivery: broker``).
    :param drain_timeout_s: how long ``--once`` waits for acknowledgements.
    """

    def __init__(
        self, refusals: Callable[[], dict[str, str]], presence: HubPresence | None, drain_timeout_s: float
    ) -> None:
        self._refusals = refusals
        self.presence = presence
        self.drain_timeout_s = drain_timeout_s

    def error(self) -> str | None:
        """The broker's refusals (publish, subscription, connection), naming the topic; ``None`` if none."""
        refusals = "; ".join(f"broker refused {cause}: {reason}" for cause, reason in self._refusals().items())
        return refusals[:MAX_ERROR_CHARS] or None

    def hub_online(self) -> bool | None:
        """Whether a hub is online (``None`` with ``delivery: broker``)."""
        return None if self.presence is None else self.presence.online

    def stuck(self) -> str | None:
        """What waiting for acknowledgements at shutdown cannot cure: a refusal, or no hub online."""
        if error := self.error():
            return error
        if self.presence is not None and not self.presence.online:
            return f"no hub online: no retained 'online' on {HUB_PRESENCE_FILTER}"
        return None

    def stall_reason(self) -> str:
        """Why the outbox did not drain: a refusal, no hub online, or no ack in time."""
        return self.stuck() or f"no acknowledgement within outbox.drain_timeout_s = {self.drain_timeout_s:g} s"


def numbered(event: Event, outbox_id: str) -> Callable[[int], bytes]:
    """The payload of ``event`` once the outbox ``outbox_id`` gave it its number (for :meth:`Outbox.put`)."""
    return lambda seq: event.model_copy(update={"seq": seq, "outbox_id": outbox_id}).to_json()
