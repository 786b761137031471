"""Helpers of the delivery fault tests: the photos a node streams, what a hub stored of them, a cuttable uplink.

A run's *stored set* is what the hub's database holds of one node, without what differs between two runs of the
same input (event ids are minted from the start time, timestamps are the capture times): per stored event, its
messages' ``type``, ``frame``, ``box``, ``label`` and ``score``, and whether its snapshot is stored. It is a
multiset: the same face stored twice is two entries.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections import Counter
from pathlib import Path

from conftest import SCENES, need
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from devsite.broker import free_port

#: What one stored event looks like, whichever run stored it.
StoredEvent = tuple[tuple[tuple[object, ...], ...], bool]


def photo_folder(folder: Path, count: int) -> Path:
    """``count`` street photos of the team's scene dataset (symlinks), the same ones on every call."""
    images = sorted((need(SCENES) / "images").glob("*.jpg"))
    folder.mkdir(parents=True, exist_ok=True)
    for image in images[:count]:
        (folder / image.name).symlink_to(image)
    return folder


def stored_messages(db_url: str, site: str) -> dict[str, set[str]]:
    """Event id -> the raw payloads stored for it, of ``site``."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT e.id, m.payload FROM events e JOIN event_messages m "
                    "ON m.event_id = e.id WHERE e.site = :site"
                ),
                {"site": site},
            ).all()
    except DBAPIError:  # not created yet
        return {}
    finally:
        engine.dispose()
    out: dict[str, set[str]] = {}
    for event_id, payload in rows:
        out.setdefault(event_id, set()).add(payload)
    return out


def stored_set(db_url: str, site: str, ids: set[str] | None = None) -> Counter[StoredEvent]:
    """The stored set of ``site`` (see the module docstring), or of its events ``ids``."""
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            snapshots = {
                row[0]
                for row in conn.execute(text("SELECT event_id FROM snapshots WHERE site = :site"), {"site": site})
            }
            counted = {
                row[0]: row[1]
                for row in conn.execute(text("SELECT id, messages FROM events WHERE site = :site"), {"site": site})
            }
    except DBAPIError:
        return Counter()
    finally:
        engine.dispose()
    result: Counter[StoredEvent] = Counter()
    for event_id, payloads in stored_messages(db_url, site).items():
        if ids is not None and event_id not in ids:
            continue
        assert counted[event_id] == len(payloads), f"{event_id} counts {counted[event_id]} messages of {len(payloads)}"
        messages = [json.loads(p) for p in payloads]
        key = tuple(sorted((m["type"], str(m.get("frame")), tuple(m["box"]), m["label"], m["score"]) for m in messages))
        result[(key, event_id in snapshots)] += 1
    return result


class Uplink:
    """A TCP relay from a local port to ``target``, which can be cut (every connection closed, new ones refused)
    and restored: the network between a building's broker and the central one.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def open(self) -> Uplink:
        """Accept connections and relay them (again, after :meth:`cut`)."""
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(8)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), name="uplink-accept", daemon=True).start()
        return self

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                inbound, _ = server.accept()
            except OSError:  # closed by cut()
                return
            try:
                outbound = socket.create_connection(self.target, timeout=5)
            except OSError:
                inbound.close()
                continue
            with self._lock:
                self._sockets += [inbound, outbound]
            for source, sink in ((inbound, outbound), (outbound, inbound)):
                threading.Thread(target=self._pump, args=(source, sink), name="uplink-pump", daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Close every relayed connection and refuse new ones until :meth:`open`."""
        if self._server is not None:
            with contextlib.suppress(OSError):  # wakes the accept() blocked in the relay's thread (Linux)
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
