"""Configuration: YAML files validated against typed models, overridable from the
environment (``MASKWATCH_*``) and the command line.

Precedence, lowest first: model defaults, the YAML file, environment variables,
command-line overrides. Nested keys are joined with ``__`` in the environment
and with ``.`` on the command line::

    MASKWATCH_BROKER__HOST=10.0.0.5 maskwatch edge --set servo.max_deg=45

Unknown keys are rejected with their dotted name in the error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import ConfigError
from shared.topics import ID_PATTERN

ENV_PREFIX = "MASKWATCH_"

log = logging.getLogger(__name__)


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TlsConfig(StrictModel):
    """TLS to the broker; all paths are PEM files."""

    ca_certs: Path | None = Field(None, description="CA bundle that signed the broker's certificate")
    certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    keyfile: Path | None = Field(None, description="client private key (mutual TLS)")
    insecure: bool = Field(False, description="skip hostname verification (tests only)")


#: The MQTT versions Maskwatch speaks: 5 and 3.1.1.
MqttProtocol = Literal[5, 311]


class BrokerConfig(StrictModel):
    """How to reach the MQTT broker."""

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: str | None = Field(None, description="secret; prefer MASKWATCH_BROKER__PASSWORD")
    tls: TlsConfig | None = None
    protocol: MqttProtocol = Field(5, description="MQTT 5 (default) or 3.1.1 (311)")
    keepalive_s: int = Field(30, ge=5, le=3600)
    client_id: str | None = Field(None, description="default: maskwatch-<role>-<site>-<node>")
    session_expiry_s: int = Field(7 * 24 * 3600, ge=0, description="MQTT 5 persistent session lifetime")
    reconnect_min_s: float = Field(0.5, gt=0)
    reconnect_max_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _tls_pairs(self) -> BrokerConfig:
        if self.tls and (self.tls.certfile is None) != (self.tls.keyfile is None):
            raise ValueError("tls.certfile and tls.keyfile go together")
        return self

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_host_port(value: str, default_port: int = 1883) -> tuple[str, int]:
    """Split ``HOST[:PORT]`` (``[::1]:1883`` for IPv6)."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":") or str(default_port)
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, str(default_port)
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _identifier(value: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise ValueError("must match [a-z0-9_-]{1,64}")
    return value


#: A config value used as a topic level or session name (site, node, hub id, share group).
Identifier = Annotated[str, AfterValidator(_identifier)]


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError):
        return text


#: ``MASKWATCH_*`` variables that are read elsewhere and are not config keys.
NOT_CONFIG_ENV = frozenset({"MASKWATCH_MODEL_DIR", "MASKWATCH_SHARED"})


def env_overrides(environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX) -> dict[str, Any]:
    """Nested overrides from ``MASKWATCH_A__B=value`` variables (values parsed as YAML scalars).

    The variables in :data:`NOT_CONFIG_ENV` (the model cache, the team data folder) are skipped.
    """
    environ = os.environ if environ is None else environ
    tree: dict[str, Any] = {}
    for key, value in environ.items():
        if key.startswith(prefix) and len(key) > len(prefix) and key not in NOT_CONFIG_ENV:
            dotted = key[len(prefix) :].lower().replace("__", ".")
            _set_path(tree, dotted, _scalar(value))
    return tree


def parse_set_options(items: Iterable[str]) -> dict[str, Any]:
    """Overrides from ``--set key.sub=value`` options."""
    tree: dict[str, Any] = {}
    for item in items:
        key, value = split_set_option(item)
        _set_path(tree, key, _scalar(value))
    return tree


def split_set_option(item: str) -> tuple[str, str]:
    """``KEY=VALUE`` of a ``--set`` option as ``(key, value)``, or :class:`ConfigError`."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
    return key.strip(), value


def merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``; ``None`` values in override are skipped."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            continue
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, or raise :class:`ConfigError` saying what is wrong with the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


C = TypeVar("C", bound=BaseModel)


def _own_env_keys(model: type[BaseModel], tree: dict[str, Any]) -> dict[str, Any]:
    """Keep the environment overrides whose top-level key belongs to ``model``.

    The edge and the hub may share one environment (the demo, a small site on one box), so a
    ``MASKWATCH_DB`` meant for the hub is ignored by the edge with a warning; an unknown key
    *below* a known one (``MASKWATCH_BROKER__HOTS``) is still an error.
    """
    own = {key: value for key, value in tree.items() if key in model.model_fields}
    for key in sorted(set(tree) - set(own)):
        log.warning("ignoring %s%s*: %r is not a key of the %s config", ENV_PREFIX, key.upper(), key, model.__name__)
    return own


def load_config(
    model: type[C],
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> C:
    """Build ``model`` from defaults, the YAML file, ``MASKWATCH_*`` variables and ``overrides``.

    Raises :class:`ConfigError` naming each bad key and why, e.g.
    ``servo.max_deg: Input should be less than or equal to 180``.
    """
    data: dict[str, Any] = read_yaml(path) if path else {}
    data = merge(data, _own_env_keys(model, env_overrides(environ)))
    data = merge(data, overrides or {})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{key}: {msg}")
        source = f" in {path}" if path else ""
        raise ConfigError(f"invalid configuration{source}: " + "; ".join(problems)) from None


def redacted(config: BaseModel) -> dict[str, Any]:
    """The config as a JSON-able dict with secrets (password, token, key) replaced by ``***``."""

    def scrub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: scrub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        if value is not None and any(s in key.lower() for s in ("password", "token", "secret", "keyfile")):
            return "***"
        return value

    return {k: scrub(v, k) for k, v in config.model_dump(mode="json").items()}
