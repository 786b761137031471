"""Remote commands: ``.../cmd/<name>`` in, exactly one ``.../response/<name>`` out.

:class:`Dispatcher` decodes, validates and routes every command through a table
of handlers (name -> handler) and answers each exactly once, with the
``request_id``: ``ok`` with the applied value, or ``error`` with the reason
(invalid JSON, unknown fields, out-of-range values, unknown command names).
Commands to ``maskwatch/<site>/all/cmd/<name>`` are handled like the node's own.
The hub's retained ``desired`` config is applied on every connect. A command that
may take minutes (:data:`BACKGROUND_COMMANDS`: a model push waits for its chunks
and its probation) runs in a thread of its own, one at a time, so that every
other command is answered meanwhile.

:class:`NodeCommands` holds one handler per command of the contract
(``_on_<name>`` for each name of :data:`shared.messages.COMMANDS`; a command
without a handler fails this module's import): each checks, applies, returns
the applied value, and the dispatcher publishes the retained state afterwards.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from edge.devices.servo import PanServo, ServoPlanner
from edge.scheduler import Scheduler
from edge.state import NodeRuntime
from shared.errors import CommandRejected, ContractError
from shared.logcap import LogCap
from shared.messages import (
    COMMANDS,
    MAX_ERROR_CHARS,
    Command,
    CommandResponse,
    DesiredConfig,
    DetectCommand,
    ScheduleCommand,
    ScheduleState,
    ServoCommand,
    ThresholdCommand,
    parse,
    utc_now,
)
from shared.mqtt import Received
from shared.topics import NodeTopics, parse_topic
from shared.vocabulary import ServoMode

log = logging.getLogger(__name__)

Handler = Callable[[Command], Any]
PublishFn = Callable[[str, bytes], Any]

#: Commands that may take minutes: each runs in a thread of its own, one at a time (another of the same name is
#: answered ``error``, busy, until the first has answered), so that the other commands are answered meanwhile.
BACKGROUND_COMMANDS = frozenset({"model"})


def _request_id_of(payload: bytes) -> str | None:
    """Best-effort ``request_id`` of a payload that failed validation."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid[:128] if isinstance(rid, str) and rid else None


class Dispatcher:
    """Routes commands to handlers in the ``commands`` thread and answers each exactly once.

    :param topics: the node's topics (answers go to ``topics.response(name)``).
    :param handlers: command name -> handler returning the applied value or raising :class:`CommandRejected`
        (any other exception is a bug: logged with its stack and answered as a `failed` error).
    :param publish: ``publish(topic, payload)`` for the answers (QoS 1).
    :param after: called after every successful command (publish the retained state).
    :param apply_desired: applies the hub's :class:`DesiredConfig`.
    :param background: the commands that run in a thread of their own (:data:`BACKGROUND_COMMANDS`).
    """

    def __init__(
        self,
        topics: NodeTopics,
        handlers: dict[str, Handler],
        publish: PublishFn,
        *,
        after: Callable[[], None] | None = None,
        apply_desired: Callable[[DesiredConfig], None] | None = None,
        background: frozenset[str] = BACKGROUND_COMMANDS,
    ) -> None:
        self.topics = topics
        self.handlers = handlers
        self._publish = publish
        self._after = after
        self._apply_desired = apply_desired
        self.background = background
        self._running: dict[str, str | None] = {}  # background command name -> request id of the one running
        self._running_lock = threading.Lock()
        self._inbox: queue.SimpleQueue[Received] = queue.SimpleQueue()
        self.rejected: Counter[str] = Counter()
        self._reject_log = LogCap(log, "command rejections")

    def receive(self, message: Received) -> None:
        """Subscription handler (network thread): enqueue only."""
        self._inbox.put(message)

    def run(self, stop: threading.Event) -> None:
        """Body of the ``commands`` thread."""
        while not stop.is_set():
            try:
                message = self._inbox.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.handle(message)
            except Exception:  # one boundary per thread: a bug in a handler must not stop the node
                log.exception("command on %s failed", message.topic)

    def handle(self, message: Received) -> CommandResponse | None:
        """Process one message (command or desired config); return the answer published, if any (``None`` also
        for a background command that was started: it answers when it is done)."""
        if message.topic == self.topics.desired:
            self._desired(message.payload)
            return None
        try:
            info = parse_topic(message.topic)
        except ContractError as exc:
            self.rejected["topic"] += 1
            self._reject_log.warning("topic", "ignoring message on %s: %s", message.topic, exc)
            return None
        name = info.name or ""
        if name in self.background and name in self.handlers:
            return self._start(name, message.payload)
        return self._reply(name, self._answer(name, message.payload))

    def _reply(self, name: str, answer: CommandResponse) -> CommandResponse:
        self._publish(self.topics.response(name), answer.to_json())
        if answer.status == "ok" and self._after:
            self._after()
        return answer

    def _start(self, name: str, payload: bytes) -> CommandResponse | None:
        """Run a background command in a thread of its own, or answer busy while one of its name runs."""
        request_id = _request_id_of(payload)
        with self._running_lock:
            busy = name in self._running
            running = self._running.setdefault(name, request_id)  # the one already running, if busy
        if busy:
            reason = f"a {name} command ({running}) is still running: send this one again when it has answered"
            return self._reply(name, self._error("busy", request_id, reason))

        def run() -> None:
            try:
                self._reply(name, self._answer(name, payload))
            except Exception:  # one boundary per thread, as in run()
                log.exception("command %s (%s) failed", name, request_id)
            finally:
                with self._running_lock:
                    del self._running[name]

        threading.Thread(target=run, name=f"command-{name}", daemon=True).start()
        return None

    def _answer(self, name: str, payload: bytes) -> CommandResponse:
        model = COMMANDS.get(name)
        handler = self.handlers.get(name)
        if model is None or handler is None:
            return self._error(
                "unknown",
                _request_id_of(payload),
                f"unknown command {name!r}; known: " + ", ".join(sorted(self.handlers)),
            )
        try:
            command = parse(model, payload)
        except ContractError as exc:
            return self._error(exc.reason, _request_id_of(payload), f"invalid {name} command: {exc}")
        try:
            value = handler(command)
        except CommandRejected as exc:
            return self._error("rejected", command.request_id, str(exc))
        except Exception as exc:  # a bug in a handler: the sender still gets its one answer, not a timeout
            log.exception("command %s (%s) failed", name, command.request_id)
            reason = f"{name} failed on the node: {type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return self._error("failed", command.request_id, reason)
        log.info("command %s (%s): %s", name, command.request_id, value)
        return CommandResponse(
            request_id=command.request_id,
            status="ok",
            site=self.topics.site,
            node=self.topics.node,
            ts=utc_now(),
            value=value,
        )

    def _error(self, kind: str, request_id: str | None, reason: str) -> CommandResponse:
        """Count the rejection under ``kind``, log it (a few per kind and minute) and build the error answer."""
        self.rejected[kind] += 1
        self._reject_log.warning(kind, "command rejected (%s): %s", request_id, reason)
        return CommandResponse(
            request_id=request_id,
            status="error",
            site=self.topics.site,
            node=self.topics.node,
            ts=utc_now(),
            error=reason,
        )

    def _desired(self, payload: bytes) -> None:
        if not payload:  # a cleared retained message
            return
        try:
            desired = parse(DesiredConfig, payload)
        except ContractError as exc:
            self.rejected[exc.reason] += 1
            log.warning("ignoring invalid desired config: %s", exc)
            return
        if self._apply_desired:
            self._apply_desired(desired)
            log.info("applied desired config %s", desired.model_dump(exclude_none=True, exclude={"v"}))
        if self._after:
            self._after()


def handler_name(command: str) -> str:
    """The name of :class:`NodeCommands`' method that handles ``command``."""
    return f"_on_{command}"


class NodeCommands:
    """The node's command handlers and the desired-config applier.

    :param runtime: threshold and detect switch.
    :param servo: the pan servo (``None``: servo commands are rejected).
    :param planner: the servo's planner.
    :param scheduler: applies the schedule (and parks the servo outside opening hours).
    :param snapshot: publishes a JPEG of the current frame now on ``.../snapshot/<request_id>`` and returns
        what it published.
    :param config: returns the effective config, secrets removed.
    :param model: takes a pushed model (:meth:`edge.rollout.ModelRollout.apply`); ``None``: model pushes are
        rejected.
    """

    def __init__(
        self,
        runtime: NodeRuntime,
        *,
        servo: PanServo | None,
        planner: ServoPlanner | None,
        scheduler: Scheduler,
        snapshot: Callable[[str], dict[str, Any]],
        config: Callable[[], dict[str, Any]],
        model: Handler | None = None,
    ) -> None:
        self.runtime = runtime
        self._model = model
        self.servo = servo
        self.planner = planner
        self.scheduler = scheduler
        self._snapshot = snapshot
        self._config = config

    def table(self) -> dict[str, Handler]:
        """Command name -> handler: ``_on_<name>`` for every command of the contract (:data:`COMMANDS`)."""
        return {name: getattr(self, handler_name(name)) for name in COMMANDS}

    def _on_servo(self, command: Command) -> Any:
        assert isinstance(command, ServoCommand)
        if self.servo is None or self.planner is None:
            raise CommandRejected("this node has no servo (servo.enabled is false)")
        status = self.runtime.schedule_status
        if self.scheduler.parked and status is not None:
            until = status.next_change.isoformat() if status.next_change else "the schedule changes"
            raise CommandRejected(f"the servo is parked outside opening hours (schedule) until {until}")
        clamped = False
        angle = None
        if command.angle is not None:
            angle, clamped = self.servo.clamp(command.angle)
        lo = hi = None
        if command.sweep_min_deg is not None:
            lo, c = self.servo.clamp(command.sweep_min_deg)
            clamped |= c
        if command.sweep_max_deg is not None:
            hi, c = self.servo.clamp(command.sweep_max_deg)
            clamped |= c
        mode = command.mode or ServoMode.HOLD
        value = self.planner.set_mode(
            mode,
            angle=angle,
            sweep_min_deg=lo,
            sweep_max_deg=hi,
            sweep_step_deg=command.sweep_step_deg,
            dwell_s=command.dwell_s,
        )
        value["clamped"] = clamped
        if clamped:
            value["limits"] = [self.servo.config.min_deg, self.servo.config.max_deg]
        return value

    def _on_threshold(self, command: Command) -> Any:
        assert isinstance(command, ThresholdCommand)
        with self.runtime.lock:
            self.runtime.threshold = command.value
        return {"threshold": command.value}

    def _on_detect(self, command: Command) -> Any:
        assert isinstance(command, DetectCommand)
        with self.runtime.lock:
            self.runtime.detect = command.enabled
        return {"detect": command.enabled}

    def _on_schedule(self, command: Command) -> Any:
        assert isinstance(command, ScheduleCommand)
        status = self.scheduler.set(command.schedule)
        assert status is not None
        return {
            "schedule": command.schedule.model_dump(mode="json", exclude_none=True),
            "status": ScheduleState.of(status).model_dump(mode="json", exclude_none=True),
        }

    def _on_snapshot(self, command: Command) -> Any:
        return self._snapshot(command.request_id)

    def _on_config(self, command: Command) -> Any:
        return self._config()

    def _on_model(self, command: Command) -> Any:
        if self._model is None:
            raise CommandRejected("this node takes no pushed models")
        return self._model(command)

    def apply_desired(self, desired: DesiredConfig) -> None:
        """Apply the hub's retained desired config (out-of-range angles are clamped)."""
        with self.runtime.lock:
            if desired.threshold is not None:
                self.runtime.threshold = desired.threshold
            if desired.detect is not None:
                self.runtime.detect = desired.detect
        if desired.schedule is not None:
            self.scheduler.set(desired.schedule)
        if (
            self.servo is not None
            and self.planner is not None
            and (desired.servo_mode is not None or desired.servo_angle is not None)
        ):
            angle = None if desired.servo_angle is None else self.servo.clamp(desired.servo_angle)[0]
            mode = desired.servo_mode or (ServoMode.HOLD if angle is not None else self.planner.mode)
            self.scheduler.set_servo(mode, angle)


_unhandled = [name for name in COMMANDS if not callable(getattr(NodeCommands, handler_name(name), None))]
if _unhandled:
    raise TypeError(f"NodeCommands has no handler for command(s) {', '.join(_unhandled)} of shared.messages.COMMANDS")
