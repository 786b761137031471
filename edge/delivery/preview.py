"""The live preview: an MJPEG stream of annotated frames and a still ``/snapshot.jpg``.

Off by default; ``--preview 127.0.0.1:8090`` turns it on (bind to loopback
unless you mean to expose the camera). Open ``http://127.0.0.1:8090/`` in a browser.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np

from edge.delivery.snapshot import encode_jpeg
from edge.view import View
from shared.errors import ConfigError

log = logging.getLogger(__name__)

BOUNDARY = "maskwatchframe"
_COLOURS = {"mask": (255, 128, 0), "no_mask": (0, 0, 255)}  # BGR: blue / red


def annotate(view: View, angle: float | None) -> np.ndarray | None:
    """The view's frame with boxes, labels, scores, the servo angle and fps drawn on it."""
    if view.frame is None:
        return None
    image = view.frame.image.copy()
    for face in view.faces:
        colour = _COLOURS.get(face.label, (200, 200, 200)) if face.confirmed else (160, 160, 160)
        x, y, w, h = face.box
        cv2.rectangle(image, (x, y), (x + w, y + h), colour, 2)
        cv2.putText(
            image,
            f"{face.label} {face.score:.2f}",
            (x, max(12, y - 6)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            colour,
            1,
            cv2.LINE_AA,
        )
    shown = "off" if angle is None else f"{angle:+.1f} deg"
    cv2.putText(
        image,
        f"angle {shown}  {view.fps:.1f} fps",
        (8, image.shape[0] - 10),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return image


class PreviewServer:
    """Serves ``/`` (a page), ``/stream.mjpg`` and ``/snapshot.jpg`` from ``frame_jpeg()``.

    :param host: bind address (loopback recommended).
    :param port: TCP port (0: any free port; see :attr:`port`).
    :param frame_jpeg: returns the current annotated frame as JPEG bytes, or ``None`` before the first.
    :param fps: stream rate.
    :raises ConfigError: the address cannot be listened on (in use, not local).
    """

    def __init__(self, host: str, port: int, frame_jpeg: Callable[[], bytes | None], fps: float = 10.0) -> None:
        self.frame_jpeg = frame_jpeg
        self.period = 1.0 / fps
        self.stopping = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: object) -> None:
                log.debug("preview: " + fmt, *args)

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/":
                    self._send(
                        200,
                        "text/html",
                        b"<html><body style='margin:0;background:#000'>"
                        b"<img src='/stream.mjpg' style='width:100%'></body></html>",
                    )
                elif path == "/snapshot.jpg":
                    jpeg = server.frame_jpeg()
                    if jpeg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpeg)
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found: try / /stream.mjpg /snapshot.jpg\n")

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def _stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                try:
                    while not server.stopping.wait(server.period):
                        jpeg = server.frame_jpeg()
                        if jpeg is None:
                            continue
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
                            + jpeg
                            + b"\r\n"
                        )
                except (BrokenPipeError, ConnectionResetError):
                    log.debug("preview client left")

        try:
            self._httpd = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(f"preview.bind {host}:{port}: cannot listen there ({exc.strerror or exc})") from exc
        self._httpd.daemon_threads = True
        self.host, self.port = self._httpd.server_address[:2]

    def run(self, stop: threading.Event) -> None:
        """Body of the ``preview`` thread: serve until ``stop``."""
        watcher = threading.Thread(target=self._stop_on, args=(stop,), name="preview-stop", daemon=True)
        watcher.start()
        log.info("preview on http://%s:%d/", self.host, self.port)
        self._httpd.serve_forever(poll_interval=0.2)
        self._httpd.server_close()

    def _stop_on(self, stop: threading.Event) -> None:
        stop.wait()
        self.stopping.set()
        self._httpd.shutdown()


def view_jpeg(view: View, angle: float | None, quality: int = 75) -> bytes | None:
    """Annotate and encode the view (``None`` before the first frame)."""
    image = annotate(view, angle)
    return None if image is None else encode_jpeg(image, 2_000_000, quality)
