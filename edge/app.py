"""The edge node's composition root: builds the parts and runs them as named threads.

Threads (all stop on one shared Event, in reverse order): ``capture`` (the
source), ``inference`` (the :class:`~edge.pipeline.Pipeline`), ``servo``,
``commands`` (the :class:`~edge.commands.Dispatcher`), ``stats``, ``schedule``
(the :class:`~edge.scheduler.Scheduler`), ``preview``,
and ``delivery`` (the outbox :class:`~edge.delivery.outbox.Courier`), which stops last
so what the others produced is flushed. MQTT's own network thread only
enqueues.

Example::

    app = EdgeApp(load_edge_config(overrides={"source": "scene:builtin"}))
    app.start()
    ...
    app.close()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from edge.capture.sources import Capture, open_source
from edge.commands import Dispatcher, NodeCommands
from edge.config import EdgeConfig
from edge.delivery.acks import DeliveryStatus, HubPresence
from edge.delivery.outbox import Courier, Outbox
from edge.delivery.preview import PreviewServer, view_jpeg
from edge.delivery.snapshot import blur_box, encode_jpeg
from edge.delivery.stats import cpu_temperature
from edge.devices.indicator import Indicator
from edge.devices.pins import make_pin_factory
from edge.devices.servo import PanServo, ServoPlanner, drive
from edge.pipeline import Pipeline
from edge.rollout import ChunkInbox, ModelFolder, ModelRollout
from edge.scheduler import Scheduler
from edge.state import NodeRuntime
from edge.vision.classifier import Classifier, MaskClassifier
from edge.vision.detector import FaceDetector, create_detector
from shared.config import parse_host_port, redacted
from shared.errors import CommandRejected, ContractError, ModelError
from shared.messages import MAX_ERROR_CHARS, NodeStats, utc_now
from shared.mqtt import MqttClient, Will
from shared.topics import HUB_PRESENCE_FILTER, NodeTopics

log = logging.getLogger(__name__)

#: How often (seconds) the ``stats`` thread checks the camera's health between stats messages.
HEALTH_CHECK_S = 1.0


class EdgeApp:
    """One edge node.

    :param config: the loaded config.
    :param once: process a finite source to its end, deliver the outbox, then stop.
    :param pin_factory: gpiozero pin factory to use instead of ``config.pin_factory`` (tests: mock pins).
    :param detector: a face detector instead of ``create_detector(config.profile)``.
    :param classifier: a mask classifier instead of the packaged one.
    """

    def __init__(
        self,
        config: EdgeConfig,
        *,
        once: bool = False,
        pin_factory: Any = None,
        detector: FaceDetector | None = None,
        classifier: Classifier | None = None,
    ) -> None:
        self.config = config
        self.once = once
        self.topics = NodeTopics(config.site, config.node)
        self.stopping = threading.Event()
        self._delivery_stop = threading.Event()
        self._pin_factory = pin_factory
        self._detector = detector
        self._classifier = classifier
        self._threads: list[threading.Thread] = []
        #: what :meth:`_build` opened, closed in reverse by :meth:`close`
        self._parts = ExitStack()
        self._built = False
        self._started = time.monotonic()
        self.servo: PanServo | None = None
        self.planner: ServoPlanner | None = None
        self.indicator: Indicator | None = None

    # -- building ------------------------------------------------------------------

    def start(self) -> None:
        """Build every part and start the threads; on failure, what was built is closed again."""
        try:
            self._build()
        except BaseException:
            self.close(drain=False)
            raise
        for name, target in self._bodies():
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _build(self) -> None:
        """Build every part, in dependency order; each one that holds a resource is registered to be closed in
        reverse (client, outbox, indicator, servo)."""
        cfg = self.config
        if cfg.servo.enabled or cfg.indicator.enabled:
            factory = self._pin_factory or make_pin_factory(cfg.pin_factory)
            if cfg.servo.enabled:
                self.servo = PanServo(cfg.servo, factory)
                self._parts.callback(self.servo.close)
                self.planner = ServoPlanner(cfg.servo)
            if cfg.indicator.enabled:
                self.indicator = Indicator(cfg.indicator, factory)
                self._parts.callback(self.indicator.close)
        if self._detector is None:
            self._detector = create_detector(cfg.profile, cfg.detector, cfg.num_threads)
        self.model_folder = ModelFolder(cfg.model_path())
        model_error = None
        if self._classifier is None:
            self._classifier, model_error = self._load_classifier()
        self.runtime = NodeRuntime(
            site=cfg.site,
            node=cfg.node,
            threshold=cfg.operating_point().threshold,
            detect=cfg.detect,
            model=self._classifier.version,
            model_sha256=self._classifier.sha256,
            model_error=model_error,
            profile=cfg.profile,
            source=cfg.source,
            servo=self.servo,
            planner=self.planner,
            min_deg=cfg.servo.min_deg,
            max_deg=cfg.servo.max_deg,
        )
        self.outbox = Outbox(cfg.outbox_path(), cfg.outbox.max_messages)
        self._parts.callback(self.outbox.close)
        if self.outbox.depth:
            log.info("outbox %s holds %d undelivered message(s): replaying", cfg.outbox_path(), self.outbox.depth)
        self.client = MqttClient(
            cfg.broker,
            cfg.client_id(),
            will=Will(self.topics.status, b"offline"),
            persistent=True,
            on_connect=self._on_connect,
            on_publish=lambda mid: self.courier.acknowledged(mid),
            on_refused=lambda mid, reason: self.courier.refused(mid, reason),
        )
        self.presence = HubPresence(on_online=lambda: self.courier.reconnected())
        self._parts.callback(self.client.stop)
        self.courier = Courier(
            self.outbox,
            lambda t, p, q: self.client.publish(t, p, qos=q),
            lambda: self.client.connected,
            topics=self.topics,
            delivery=cfg.delivery,
            may_send=lambda: self.presence.online,
            resend_after_s=cfg.outbox.resend_after_s,
            resend_max_s=cfg.outbox.resend_max_s,
        )
        self.delivery = DeliveryStatus(
            lambda: dict(self.client.refusals),
            self.presence if cfg.delivery == "hub" else None,
            cfg.outbox.drain_timeout_s,
        )
        if cfg.delivery == "hub":
            self.client.subscribe(self.topics.ack, self.courier.receive_ack, qos=1)
            self.client.subscribe(HUB_PRESENCE_FILTER, self.presence.receive, qos=1)
        servo = self.servo
        source = open_source(
            cfg.source, camera=cfg.camera, scene=cfg.scene, angle=(lambda: servo.position) if servo else None
        )
        self.capture = Capture(
            source,
            cfg.camera.retry_min_s,
            cfg.camera.retry_max_s,
            cfg.camera.stall_timeout_s,
            retry=not self.once,
            reopen_after_s=cfg.camera.reopen_after_s,
        )
        self.pipeline = Pipeline(
            cfg,
            self._detector,
            self._classifier,
            self.runtime,
            self.outbox,
            notify=self.courier.notify,
            planner=self.planner,
            indicator=self.indicator,
        )
        self.model_inbox = ChunkInbox()
        self.client.subscribe(self.topics.model_filter, self.model_inbox.receive, qos=1)
        rollout = ModelRollout(
            self.model_folder,
            self.model_inbox,
            self.pipeline,
            lambda: create_detector(cfg.profile, cfg.detector, 1),
            self.runtime,
            self.publish_state,
            cfg.num_threads,
            self.stopping,
        )
        self.scheduler = Scheduler(self.runtime, servo=self.servo, planner=self.planner, on_change=self.publish_state)
        self.scheduler.set(cfg.schedule)
        self.commands = NodeCommands(
            self.runtime,
            servo=self.servo,
            planner=self.planner,
            scheduler=self.scheduler,
            snapshot=self.publish_snapshot,
            config=lambda: redacted(cfg),
            model=rollout.apply,
        )
        self.dispatcher = Dispatcher(
            self.topics,
            self.commands.table(),
            lambda t, p: self.client.publish(t, p, qos=1),
            after=self.publish_state,
            apply_desired=self.commands.apply_desired,
        )
        for topic_filter in (self.topics.cmd_filter, self.topics.site_cmd_filter, self.topics.desired):
            self.client.subscribe(topic_filter, self.dispatcher.receive, qos=1)
        self.preview: PreviewServer | None = None
        if cfg.preview.bind:
            host, port = parse_host_port(cfg.preview.bind, 8090)
            self.preview = PreviewServer(host, port, self._preview_jpeg, cfg.preview.fps)
        self.client.start()
        self._built = True

    def _load_classifier(self) -> tuple[MaskClassifier, str | None]:
        """The pushed model ``active.json`` names, else the configured one; and why a pushed one did not load."""
        active = self.model_folder.active()
        if active is not None:
            try:
                return MaskClassifier(active.path, self.config.num_threads, name=active.name), None
            except ModelError as exc:
                log.error("pushed model %s does not load, using the configured one: %s", active.path, exc)
                fallback = MaskClassifier(self.config.classifier_path, self.config.num_threads)
                reason = f"pushed model {active.name}@{active.sha256[:12]} does not load: {exc}"
                return fallback, reason[:MAX_ERROR_CHARS]
        return MaskClassifier(self.config.classifier_path, self.config.num_threads), None

    def _bodies(self) -> list[tuple[str, Callable[[], None]]]:
        bodies: list[tuple[str, Callable[[], None]]] = [
            ("delivery", lambda: self.courier.run(self._delivery_stop)),
            ("capture", lambda: self.capture.run(self.stopping)),
            ("inference", lambda: self.pipeline.run(self.stopping, self.capture)),
            ("commands", lambda: self.dispatcher.run(self.stopping)),
            ("stats", self._stats_loop),
            ("schedule", lambda: self.scheduler.run(self.stopping)),
        ]
        if self.servo and self.planner:
            servo, planner = self.servo, self.planner
            bodies.append(("servo", lambda: drive(self.stopping, servo, planner, on_rest=self.publish_state)))
        if self.preview:
            preview = self.preview
            bodies.append(("preview", lambda: preview.run(self.stopping)))
        return bodies

    # -- MQTT side ---------------------------------------------------------------------

    def _on_connect(self) -> None:
        """Network thread, after every connect: re-announce and let the courier replay (no waiting here)."""
        self.client.publish(self.topics.status, b"online", qos=1, retain=True)
        self.publish_state()
        self.courier.reconnected()

    def publish_state(self) -> None:
        """Publish the retained ``state`` (skipped while offline: it is re-published on every connect)."""
        if self.client.connected:
            self.client.publish(self.topics.state, self.runtime.state().to_json(), qos=1, retain=True)

    def stats(self) -> NodeStats:
        """The ``stats`` message for the interval now ending."""
        fps, stage_ms = self.pipeline.times.reset()
        camera_error = self.capture.error
        dropped = self.capture.dropped + getattr(self.capture.source, "unreadable", 0) + self.pipeline.frames_skipped
        return NodeStats(
            site=self.config.site,
            node=self.config.node,
            ts=utc_now(),
            fps=fps,
            stage_ms=stage_ms,
            frames=self.pipeline.times.frames_total,
            dropped_frames=dropped,
            outbox_depth=self.outbox.depth,
            outbox_dropped=self.outbox.dropped,
            outbox_unacked=self.courier.unacked,
            outbox_oldest_s=self.outbox.oldest_age_s(),
            hub_online=self.delivery.hub_online(),
            delivery_error=self.delivery.error(),
            events_published=self.courier.published,
            reconnects=max(0, self.client.connects - 1),
            uptime_s=round(time.monotonic() - self._started, 1),
            cpu_temp_c=cpu_temperature(),
            camera_ok=camera_error is None,
            camera_error=camera_error,
            rejected={**self.dispatcher.rejected, **({"model_chunk": n} if (n := self.model_inbox.rejected) else {})},
        )

    def _stats_loop(self) -> None:
        """Body of the ``stats`` thread: stats every ``stats_interval_s``; the camera's health checked every
        :data:`HEALTH_CHECK_S`, so the retained state and a stats message say at once when it changes."""
        interval = self.config.stats_interval_s
        due = time.monotonic() + interval
        while not self.stopping.wait(min(interval, HEALTH_CHECK_S)):
            camera_changed = self._camera_health_changed()
            if camera_changed or time.monotonic() >= due:
                due = time.monotonic() + interval
                self._publish_stats()

    def _camera_health_changed(self) -> bool:
        """Log and publish (retained state) a change of the camera's health; say whether it changed."""
        error = self.capture.error
        if (error is None) == (self.runtime.camera_error is None):
            return False
        if error:
            log.error("camera down: %s", error)
        else:
            log.info("camera back: frames are coming again")
        self.runtime.camera_error = error
        self.publish_state()
        return True

    def _publish_stats(self) -> None:
        stats = self.stats()
        if stats.delivery_error != self.runtime.delivery_error:  # the retained state shows it too
            self.runtime.delivery_error = stats.delivery_error
            self.publish_state()
        if self.client.connected:  # stats are a live view: an interval while offline is not kept
            self.client.publish(self.topics.stats, stats.to_json(), qos=0)

    def publish_snapshot(self, request_id: str) -> dict[str, Any]:
        """``snapshot`` command: publish a JPEG of the current frame on ``.../snapshot/<request_id>`` now;
        return where and how big."""
        snap = self.config.snapshot
        if snap.mode == "off":
            raise CommandRejected("snapshots are disabled on this node (snapshot.mode: off)")
        try:
            topic = self.topics.snapshot(request_id)
        except ContractError as exc:
            raise CommandRejected(f"request_id cannot name the snapshot topic: {exc} (use [A-Za-z0-9_.:-])") from exc
        view = self.pipeline.latest()
        if view.frame is None:
            raise CommandRejected("no frame captured yet" + (f": {self.capture.error}" if self.capture.error else ""))
        image = view.frame.image
        if snap.mode == "blur":
            for face in view.faces:
                image = blur_box(image, face.box)
        jpeg = encode_jpeg(image, snap.max_bytes, snap.quality)
        self.client.publish(topic, jpeg, qos=1)
        return {
            "topic": topic,
            "bytes": len(jpeg),
            "width": image.shape[1],
            "height": image.shape[0],
            "frame": view.frame.ref,
            "angle": view.frame.angle,
        }

    def _preview_jpeg(self) -> bytes | None:
        return view_jpeg(self.pipeline.latest(), self.runtime.angle, self.config.preview.quality)

    # -- running and stopping ------------------------------------------------------------

    def wait(self) -> int:
        """Run until :meth:`stop` (or, with ``once``, the end of the source); then close. Return the exit code."""
        if self.once:
            inference = next(t for t in self._threads if t.name == "inference")
            while inference.is_alive() and not self.stopping.is_set():
                inference.join(0.2)
        else:
            self.stopping.wait()
        return self.close()

    def stop(self) -> None:
        """Ask every thread to stop (not from a signal handler: :class:`shared.shutdown.ShutdownSignals` does that)."""
        self.stopping.set()

    def close(self, drain: bool = True) -> int:
        """Stop the threads in reverse order, deliver the outbox, publish ``offline``, release devices."""
        self.stopping.set()
        for thread in reversed(self._threads):
            if thread.name != "delivery":
                thread.join(5.0)
        code = self._deliver(drain) if self._built else 0
        self._built = False
        self._parts.close()
        self._threads = []
        return code

    def _deliver(self, drain: bool) -> int:
        """Stop the courier after draining the outbox; with ``once``, the exit code of the run."""
        code = 0
        self._delivery_stop.set()
        for thread in self._threads:
            if thread.name == "delivery":
                thread.join(5.0)
        # --once waits for a hub that is away; a service that stops keeps its events for the next start
        blocked = self.delivery.error if self.once else self.delivery.stuck
        if drain and not self.courier.drain(self.config.outbox.drain_timeout_s, blocked):
            log.log(
                logging.ERROR if self.once else logging.WARNING,
                "%d message(s) not acknowledged (%s): kept in %s for the next start",
                self.outbox.depth,
                self.delivery.stall_reason(),
                self.config.outbox_path(),
            )
            code = 1 if self.once else 0
        # a short run may end before the first connect: give it the drain timeout (unless the drain just spent it)
        if self.once and not (
            self.client.connects or self.client.wait_connected(0 if code else self.config.outbox.drain_timeout_s)
        ):
            log.error(
                "broker %s never reached%s: nothing was published (events stay in %s for the next start)",
                self.config.broker.address,
                f" ({self.client.last_error})" if self.client.last_error else "",
                self.config.outbox_path(),
            )
            code = 1
        if self.once and self.capture.failure:  # a stall ended the run too; the end of a file after it does not
            log.error("source failed: %s", self.capture.failure)
            code = 1
        return code
