"""Black-box helpers for the fault, fuzz and scale tests: a ``maskwatch hub`` subprocess and polling waits.

The hub is driven only through its CLI, its HTTP API and its database file, as an operator would.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from devsite.broker import free_port
from shared.config import BrokerConfig
from shared.shutdown import STACK_DUMP_SIGNAL
from tests.polling import unique_site, wait_until

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # bench.loadgen for the tests

MASKWATCH = str(Path(sys.executable).with_name("maskwatch"))
PG_ADMIN = os.environ.get("MASKWATCH_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def stop_all(items: Sequence[Any], stop: Callable[[Any], None]) -> None:
    """``stop`` every item, the last added first. One that fails does not leave the others running: all are
    stopped, then its error is raised (with any other as its context)."""
    with ExitStack() as stack:
        for item in items:
            stack.callback(stop, item)


class ChildProcess:
    """A ``maskwatch`` child process writing its output to ``log_path``."""

    proc: subprocess.Popen[bytes] | None = None
    log_path: Path

    def spawn(self, args: list[str]) -> None:
        log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MASKWATCH_")}
        self.proc = subprocess.Popen(
            [MASKWATCH, *args], stdout=log, stderr=subprocess.STDOUT, env={**env, "PYTHONUNBUFFERED": "1"}
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no flush, no clean disconnect."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (after SIGCONT, in case it was frozen) and wait; SIGKILL after ``timeout``. The exit code.

        A process that ignores SIGTERM is a bug (systemd would wait for it too): before the SIGKILL it is asked
        for every thread's stack (SIGUSR1, into its log) and a warning names the log."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(STACK_DUMP_SIGNAL)
                time.sleep(1.0)
                self.proc.kill()
                self.proc.wait(10)
                warnings.warn(
                    f"{' '.join(map(str, self.proc.args))} ignored SIGTERM for {timeout:g} s: killed; "
                    f"its threads' stacks are in {self.log_path}",
                    stacklevel=2,
                )
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def process_tree(pid: int) -> list[int]:
    """``pid`` and its child processes (for the hub: its writer process), from /proc."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return [pid, *map(int, children)]


def tree_rss_kb(pid: int, field: str = "VmRSS") -> int:
    """Sum of a /proc status field (kB) over ``pid`` and its children."""
    total = 0
    for member in process_tree(pid):
        try:
            lines = Path(f"/proc/{member}/status").read_text().splitlines()
        except OSError:  # exited meanwhile
            continue
        total += next((int(line.split()[1]) for line in lines if line.startswith(field + ":")), 0)
    return total


def tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and its children."""
    ticks = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class HubProcess(ChildProcess):
    """``maskwatch hub --config <file>`` as a child process, with its own database, HTTP port and session.

    :param broker: the broker to use.
    :param workdir: folder for the config, the log and (for SQLite) the database.
    :param sites: sites the hub follows.
    :param db_url: SQLAlchemy URL (default: a SQLite file in ``workdir``).
    :param hub_id: names the hub's persistent MQTT session (keep it across restarts).
    :param settings: more config keys (nested dicts), e.g. ``{"ingest": {"batch_ms": 20}}``.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        workdir: Path,
        sites: list[str],
        *,
        db_url: str | None = None,
        hub_id: str | None = None,
        share_group: str | None = None,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.db_url = db_url or f"sqlite:///{workdir / 'hub.db'}"
        self.port = free_port()
        self.hub_id = hub_id or unique_site("h")
        self.config_path = workdir / f"hub-{self.hub_id}.yaml"
        self.log_path = workdir / f"hub-{self.hub_id}.log"
        config: dict[str, Any] = {
            "broker": broker.model_dump(mode="json", exclude_none=True),
            "db_url": self.db_url,
            "hub_id": self.hub_id,
            "sites": sites,
            "snapshot_dir": str(workdir / "snapshots"),
            "http": {"host": "127.0.0.1", "port": self.port},
            "ingest": {"batch_size": 200, "batch_ms": 20, "share_group": share_group},
            "auth": {"public_metrics": True},
        }
        for key, value in (settings or {}).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> HubProcess:
        """Start the hub and wait until ``/healthz`` answers (the database is migrated by then)."""
        self.spawn(["hub", "--config", str(self.config_path)])
        if not wait_until(lambda: self.healthy() or not self.alive, timeout, every=0.2) or not self.alive:
            self.stop()
            raise AssertionError(f"hub did not become healthy in {timeout} s:\n{self.log_tail()}")
        return self

    def healthy(self) -> bool:
        try:
            return self.get("/healthz").get("status") == "ok"
        except (OSError, ValueError):
            return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=10) as response:
            body = response.read()
        return json.loads(body) if response.headers.get_content_type() == "application/json" else body.decode()

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as ``{'name{labels}': value}``."""
        out = {}
        for line in str(self.get("/metrics")).splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def storage_errors(self) -> int:
        """Batches the hub had to retry after a database error (locked, disk full...)."""
        return int(
            sum(
                v for k, v in self.metrics().items() if k.startswith("maskwatch_ingest_") and k.endswith("errors_total")
            )
        )

    def rejected_total(self) -> int:
        return int(sum(v for k, v in self.metrics().items() if k.startswith("maskwatch_rejected_total")))

    def rss_kb(self, field: str = "VmRSS") -> int:
        """Resident memory of the hub and its child processes, the writer included (``VmHWM``: peaks)."""
        return tree_rss_kb(self.pid, field)

    def __enter__(self) -> HubProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EventTable:
    """Read-only view of a hub database's ``events`` table (the operator's ground truth)."""

    def __init__(self, db_url: str) -> None:
        self.engine = create_engine(db_url)

    def rows(self, site: str) -> dict[str, int]:
        """Stored event ids of ``site`` with the number of distinct messages each received."""
        with self.engine.connect() as conn:
            try:
                result = conn.execute(text("SELECT id, messages FROM events WHERE site = :site"), {"site": site})
            except DBAPIError:  # the hub has not created its tables yet
                return {}
            return {row[0]: row[1] for row in result}

    def count(self, site: str) -> int:
        return len(self.rows(site))

    def rejected(self) -> list[tuple[str, bytes]]:
        """(topic, raw payload) of every kept rejected message."""
        with self.engine.connect() as conn:
            return [(row[0], bytes(row[1])) for row in conn.execute(text("SELECT topic, payload FROM rejected"))]

    def close(self) -> None:
        self.engine.dispose()


# -- adversarial payloads ------------------------------------------------------------------------------------

#: Node ids that are not valid ids but are legal MQTT topic levels (a broker delivers them to ``+``).
#: Control characters are left out: Mosquitto disconnects a client that publishes them in a topic.
ODD_NODE_LEVELS = ("UPPER", "a b", "x" * 65, "é", "all", "n.1", "n:1", "💥", "a$b", "..")


def bad_payloads(rng: random.Random, valid: bytes) -> list[bytes]:
    """One of each adversarial kind, derived from ``valid`` (a valid JSON object), plus random ones.

    Random bytes, huge JSON, deep nesting, wrong types, unknown versions, NaN, unknown fields, bad UTF-8.
    None of them is valid for any Maskwatch message, nor equal to ``online``/``offline``.
    """
    base = json.loads(valid)
    out = [
        b"",
        b"null",
        b"[]",
        b"0",
        b'"online"',
        b"{",
        b"\xff\xfe\xfd",
        b"ONLINE",
        b"online ",
        b"offline\n",
        b"{" + b" " * 70_000 + b"}",
        json.dumps({**base, "pad": "x" * 1_000_000}).encode(),
        b"[" * 50_000 + b"]" * 50_000,
        json.dumps({**base, "v": 2}).encode(),
        json.dumps({**base, "v": "1"}).encode(),
        json.dumps({**base, "v": None}).encode(),
        json.dumps({**base, "unknown": 1}).encode(),
        json.dumps({**base, "a\u0000b": 1}).encode(),
        json.dumps({**base, "k" * 300: 1}).encode(),
        json.dumps(base).replace('"v": 1', '"v": 1, "v2": NaN').encode(),
    ]
    for key in base:
        out.append(json.dumps({k: v for k, v in base.items() if k != key}).encode() if key != "v" else b"{}")
        for wrong in (None, "x" * 300, 10**40, [1, [2, [3]]], {"a": {}}, float("nan"), True):
            if wrong != base[key]:
                out.append(json.dumps({**base, key: wrong}).encode())
        deep = json.dumps({**base, key: "@@"}).replace('"@@"', "[" * 900 + "]" * 900)
        out.append(deep.encode())
    for _ in range(400):
        kind = rng.random()
        if kind < 0.4:
            out.append(b"X" + rng.randbytes(rng.randint(0, 300)))
        elif kind < 0.7:
            out.append(
                json.dumps(
                    {
                        rng.choice([*base, "zz"]): rng.choice([None, rng.random(), "s", [], {}]),
                        **{k: v for k, v in base.items() if rng.random() < 0.5},
                    }
                ).encode()
            )
        else:
            out.append("".join(chr(rng.randint(1, 0x2FF)) for _ in range(rng.randint(1, 80))).encode())
    return [p for p in out if p not in (b"online", b"offline")]


class EdgeProcess(ChildProcess):
    """``maskwatch edge --config <file>`` as a child process (mock pins, its own outbox file).

    :param settings: config keys (nested dicts) over the defaults below, e.g. ``{"source": "scene:builtin"}``.
    """

    def __init__(
        self,
        broker: BrokerConfig,
        workdir: Path,
        site: str,
        node: str,
        *,
        once: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.site, self.node, self.once = site, node, once
        self.outbox_path = workdir / f"outbox-{node}.sqlite"
        self.config_path = workdir / f"edge-{node}.yaml"
        self.log_path = workdir / f"edge-{node}.log"
        config: dict[str, Any] = {
            "site": site,
            "node": node,
            "source": "scene:builtin",
            "pin_factory": "mock",
            "num_threads": 1,
            "broker": broker.model_dump(mode="json", exclude_none=True),
            "stats_interval_s": 1.0,
            "outbox": {"path": str(self.outbox_path), "drain_timeout_s": 20},
            "scene": {"fps": 5},
            "snapshot": {"mode": "off"},
        }
        for key, value in (settings or {}).items():
            config[key] = {**config[key], **value} if isinstance(value, dict) and key in config else value
        self.config_path.write_text(yaml.safe_dump(config))

    def start(self) -> EdgeProcess:
        self.spawn(["edge", "--config", str(self.config_path), *(["--once"] if self.once else [])])
        return self

    def freeze(self) -> None:
        """SIGSTOP: the socket stays open but nothing answers, as when the network drops (SIGCONT resumes)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def _outbox_query(self, sql: str) -> list[tuple[Any, ...]]:
        if not self.outbox_path.exists():
            return []
        with sqlite3.connect(self.outbox_path, timeout=10) as db:
            try:
                return list(db.execute(sql))
            except sqlite3.OperationalError:  # not created yet
                return []

    def outbox(self) -> list[tuple[str, bytes]]:
        """(topic, payload) of every message waiting in the outbox file, oldest first."""
        return [(t, bytes(p)) for t, p in self._outbox_query("SELECT topic, payload FROM outbox ORDER BY seq")]

    def outbox_dropped(self) -> int:
        """Messages the full outbox dropped, as the node counted them in its file."""
        rows = self._outbox_query("SELECT value FROM counters WHERE name = 'dropped'")
        return int(rows[0][0]) if rows else 0


def postgres_database() -> Iterator[str]:
    """Fixture body: a fresh PostgreSQL database (URL) for one test, dropped afterwards; skips if none answers.

    Use as ``pg_url = pytest.fixture(name="pg_url")(postgres_database)``.
    """
    sqlalchemy = pytest.importorskip("sqlalchemy")
    pytest.importorskip("psycopg2")
    engine = sqlalchemy.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"maskwatch_test_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    except sqlalchemy.exc.OperationalError as exc:
        engine.dispose()
        pytest.skip(f"no PostgreSQL at {PG_ADMIN}: {str(exc).splitlines()[0]}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        engine.dispose()
