"""A Mosquitto started from the shipped ``deploy/mosquitto`` files, for the deploy tests.

The production config refers to the official image's paths (``/mosquitto/...``) and
listens on 1883/8883; :class:`ShippedSite` maps those paths into a temporary folder and
the two listeners onto free loopback ports, and changes nothing else. Credentials come
from the shipped ``make-users`` script, certificates from ``make-certs``.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from devsite.broker import LocalMosquitto, free_port
from shared.config import BrokerConfig, TlsConfig

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "mosquitto"
MAKE_USERS = DEPLOY / "make-users"
MAKE_CERTS = DEPLOY / "make-certs"
HUB = "maskwatch.hub"
ALERTS = "maskwatch.alerts"
HOMEASSISTANT = "maskwatch.homeassistant"


def broker_owner() -> str | None:
    """The user Mosquitto drops root privileges to, when the tests run as root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("mosquitto").pw_name
    except KeyError:
        return None


def run_script(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a shipped shell script; fail with its output if it fails."""
    proc = subprocess.run(["sh", str(script), *args], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"{script.name} {' '.join(args)} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


def make_certs(out: Path, *names: str) -> Path:
    """A CA and a server certificate for ``names`` in ``out``; returns the CA file."""
    owner = broker_owner()
    run_script(MAKE_CERTS, "-o", str(out), *(["--owner", owner] if owner else []), *names)
    return out / "ca.crt"


def read_env(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a credentials file."""
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key: value for key, value in pairs}


def render_config(text: str, root: Path, port: int) -> str:
    """The shipped mosquitto.conf with its paths under ``root`` and its plain listener on ``port``."""
    rendered, count = re.subn(r"^listener 1883$", f"listener {port} 127.0.0.1", text, flags=re.M)
    assert count == 1, "mosquitto.conf must have exactly one 'listener 1883' line"
    return rendered.replace("/mosquitto/", f"{root}/")


class ShippedSite:
    """The shipped broker config, ACL, logins and TLS listener, on free loopback ports.

    :param nodes: ``site/node`` logins to create with make-users.
    """

    def __init__(self, nodes: tuple[str, ...]) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="maskwatch-deploy-"))
        self.root.chmod(0o755)  # Mosquitto reads and writes here after dropping root privileges
        owner = broker_owner()
        config = self.root / "config"
        self.secrets = config / "secrets"
        owner_args = ["--owner", owner] if owner else []
        run_script(MAKE_USERS, "-o", str(self.secrets), *owner_args, *nodes)
        self.ca = make_certs(config / "certs", "localhost", "127.0.0.1")
        self.tls_port = free_port()
        conf_d = config / "conf.d"
        shutil.copytree(DEPLOY / "conf.d", conf_d)
        tls_text, count = re.subn(
            r"^listener 8883$",
            f"listener {self.tls_port} 127.0.0.1",
            (conf_d / "tls.conf.example").read_text(),
            flags=re.M,
        )
        assert count == 1, "tls.conf.example must have exactly one 'listener 8883' line"
        (conf_d / "tls.conf").write_text(tls_text.replace("/mosquitto/", f"{self.root}/"))
        data = self.root / "data"
        data.mkdir()
        self.broker = LocalMosquitto(workdir=self.root)
        self.broker.log_path.touch()
        if owner:
            shutil.chown(data, owner)
            shutil.chown(self.broker.log_path, owner)
        self.broker.config_path.write_text(
            render_config((DEPLOY / "mosquitto.conf").read_text(), self.root, self.broker.port)
            + f"log_dest file {self.broker.log_path}\n"
        )

    def start(self) -> ShippedSite:
        self.broker.start()
        return self

    def close(self) -> None:
        self.broker.close()
        shutil.rmtree(self.root, ignore_errors=True)

    def credentials(self, username: str) -> dict[str, str]:
        """The credentials file make-users wrote for ``username``."""
        name = {HUB: "hub", ALERTS: "alerts", HOMEASSISTANT: "homeassistant"}.get(username, username.replace("/", "."))
        return read_env(self.secrets / "credentials" / f"{name}.env")

    def login(
        self,
        username: str | None,
        *,
        password: str | None = None,
        tls: bool = False,
        ca: Path | None = None,
        host: str = "127.0.0.1",
    ) -> BrokerConfig:
        """Broker settings for ``username`` (its real password unless ``password`` is given)."""
        if username is not None and password is None:
            password = self.credentials(username)["MASKWATCH_BROKER__PASSWORD"]
        return BrokerConfig(
            host=host,
            port=self.tls_port if tls else self.broker.port,
            username=username,
            password=password,
            tls=TlsConfig(ca_certs=ca or self.ca) if tls else None,
            keepalive_s=10,
            reconnect_min_s=0.2,
            reconnect_max_s=1.0,
        )
