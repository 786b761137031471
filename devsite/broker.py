"""Run a private Mosquitto broker: for tests, benchmarks and the demo site.

It binds to a free loopback port with a config written to a temporary
folder; :meth:`LocalMosquitto.stop` and :meth:`~LocalMosquitto.start` may be
called again (the same port and persistence file are reused) to simulate a
broker restart.

Example::

    with LocalMosquitto() as broker:
        print(broker.host, broker.port)
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from shared.errors import MaskwatchError

log = logging.getLogger(__name__)


#: Where the kernel takes the local ports of outgoing connections.
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
#: The first of them when that file cannot be read (Linux's default).
DEFAULT_FIRST_EPHEMERAL_PORT = 32768
#: How many ports below the ephemeral range :func:`free_port` draws from.
PORTS_BELOW_EPHEMERAL = 8000


def free_port_range() -> range:
    """The ports :func:`free_port` draws from: the :data:`PORTS_BELOW_EPHEMERAL` below the ephemeral range, none
    under 1024."""
    try:
        first_ephemeral = int(EPHEMERAL_PORTS.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = DEFAULT_FIRST_EPHEMERAL_PORT
    return range(max(1024, first_ephemeral - PORTS_BELOW_EPHEMERAL), first_ephemeral)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now, drawn at random from :func:`free_port_range`.

    A port from ``bind(port 0)`` lies in the kernel's ephemeral range, so an outgoing connection may take it as
    its local port before the caller listens on it (seen in CI: a hub's own MQTT client took the port its API
    was about to bind). If no drawn port is free, the kernel picks one after all.
    """
    candidates = free_port_range()
    for _ in range(100 if candidates else 0):
        port = random.choice(candidates)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until a TCP connect to ``host:port`` succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def mosquitto_binary() -> str | None:
    """Path of the ``mosquitto`` executable, if installed."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class LocalMosquitto:
    """A private Mosquitto on ``127.0.0.1:<free port>``.

    :param port: fixed port, or ``None`` for a free one.
    :param extra_config: more ``mosquitto.conf`` lines (auth, ACL, TLS listeners...).
    :param anonymous: allow anonymous clients on the default listener.
    :param workdir: folder for config, persistence and log; a temporary one by default.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        extra_config: str = "",
        anonymous: bool = True,
        workdir: Path | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise MaskwatchError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.binary = binary
        self.host = host
        self.port = port or free_port(host)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="maskwatch-mosquitto-")
            workdir = Path(self._tmp.name)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.config_path.write_text(
            f"listener {self.port} {host}\n"
            f"allow_anonymous {'true' if anonymous else 'false'}\n"
            "persistence true\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            "set_tcp_nodelay true\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            f"log_dest file {self.log_path}\n" + ("user root\n" if os.geteuid() == 0 else "") + extra_config + "\n"
            # as root, Mosquitto drops to user 'mosquitto', who cannot write our private folder
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> LocalMosquitto:
        """Start the broker and wait until it accepts connections."""
        if self.running:
            return self
        # its own session: a Ctrl-C in the terminal reaches our process, which stops the broker last
        self._proc = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            tail = self.log_path.read_text()[-2000:] if self.log_path.exists() else ""
            raise MaskwatchError(f"mosquitto did not start on {self.address}: {tail}")
        log.info("mosquitto running on %s (pid %s)", self.address, self._proc.pid)
        return self

    def stop(self, *, kill: bool = False, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM saves persistence; ``kill=True`` sends SIGKILL)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            if kill:
                self._proc.kill()
            else:
                self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def restart(self, *, down_s: float = 0.0) -> None:
        """Stop, optionally stay down for ``down_s`` seconds, and start again on the same port."""
        self.stop()
        if down_s:
            time.sleep(down_s)
        self.start()

    def close(self) -> None:
        """Stop the broker and remove its temporary folder."""
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> LocalMosquitto:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
