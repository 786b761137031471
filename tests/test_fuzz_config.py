"""Property-based fuzzing of the config loaders (shared, edge, hub): a valid model or a ConfigError naming the key.

Whatever a YAML file, a ``MASKWATCH_*`` variable or a ``--set`` option holds, loading gives a validated model or a
:class:`ConfigError` (never another exception, never a hang): the node or hub then exits with a clear message.
"""

from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from edge.config import EdgeConfig
from hub.config import HubConfig
from shared.config import (
    BrokerConfig,
    StrictModel,
    env_overrides,
    load_config,
    parse_host_port,
    parse_set_options,
)
from shared.errors import ConfigError

MODELS: list[type[BaseModel]] = [BrokerConfig, EdgeConfig, HubConfig]


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted path of every leaf key of a config tree (nested StrictModel sections are walked)."""
    paths = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        inner = [a for a in getattr(annotation, "__args__", (annotation,)) if isinstance(a, type)]
        section = next((a for a in inner if issubclass(a, StrictModel)), None)
        if section is not None:
            paths += leaf_paths(section, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def tree(dotted: str, value: Any) -> dict[str, Any]:
    keys = dotted.split(".")
    out: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        out = {key: out}
    return out


ADVERSARIAL = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(
        [
            10**40,
            -(10**40),
            math.nan,
            math.inf,
            "",
            "\x00",
            "../../etc/passwd",
            "x" * 5000,
            "0.0.0.0:99999",
            "host:²",
            "[::1]:",
            "sqlite:///",
            "Hq\n",
            [],
            {},
            [[[]]],
            {"a": {"b": 1}},
        ]
    ),
    st.lists(st.integers() | st.text(max_size=5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
YAML_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=10), kids, max_size=4),
    max_leaves=20,
)


def load_or_error(
    model: type[BaseModel],
    path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> BaseModel | ConfigError:
    try:
        return load_config(model, path, overrides=overrides, environ=environ or {})
    except ConfigError as exc:
        assert str(exc)
        return exc


def yaml_file(text: str | bytes) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="maskwatch-fuzz-"))
    path = folder / "config.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    return path


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_every_leaf_key_is_found(model: type[BaseModel]) -> None:
    paths = leaf_paths(model)
    assert len(paths) == len(set(paths)) > 5
    assert isinstance(load_or_error(model), model)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), data=st.data())
def test_any_value_for_a_known_key(model: type[BaseModel], data: st.DataObject) -> None:
    """One known key set to an adversarial value: a model, or an error naming that key (or its section)."""
    dotted = data.draw(st.sampled_from(leaf_paths(model)), label="key")
    value = data.draw(ADVERSARIAL, label="value")
    result = load_or_error(model, overrides=tree(dotted, value))
    if isinstance(result, ConfigError):
        named = {".".join(dotted.split(".")[:i]) for i in range(1, dotted.count(".") + 2)}
        assert any(re.search(rf"[ ;]{re.escape(key)}[.:]", str(result)) for key in named) or "(top level)" in str(
            result
        ), str(result)
        assert str(value)[:200] not in str(result) or len(str(value)) < 40, "errors must not echo huge values"


@settings(max_examples=150)
@given(
    model=st.sampled_from(MODELS),
    dotted=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3).map(".".join),
    value=ADVERSARIAL,
)
def test_unknown_keys_are_named(model: type[BaseModel], dotted: str, value: Any) -> None:
    result = load_or_error(model, overrides=tree(dotted, value))
    if dotted.split(".")[0] not in model.model_fields and value is not None:  # None overrides are skipped
        assert isinstance(result, ConfigError)
        assert "unknown key" in str(result) or "(top level)" in str(result) or ":" in str(result)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), doc=YAML_VALUES)
def test_random_yaml_documents(model: type[BaseModel], doc: Any) -> None:
    load_or_error(model, yaml_file(yaml.safe_dump(doc)))


@settings(max_examples=150)
@given(model=st.sampled_from(MODELS), raw=st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_random_file_contents(model: type[BaseModel], raw: bytes) -> None:
    load_or_error(model, yaml_file(raw))


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 600 + "]" * 600,  # deeper than PyYAML can recurse
        "broker: " + "{a: " * 600 + "1" + "}" * 600,
        "!!python/object/apply:os.system ['echo pwned']",  # safe_load refuses to construct it
        "broker: &b {host: h}\nhub_id: *b\n",
        "\ufeffbroker: {host: h}\n",
        "- a\n- b\n",
        "key: [unclosed\n",
        "\t:\n",
    ],
)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_hostile_yaml(model: type[BaseModel], text: str) -> None:
    load_or_error(model, yaml_file(text))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_yaml_alias_bomb_is_rejected_quickly(model: type[BaseModel]) -> None:
    """A "billion laughs" file (aliases fanning out to 9**9 leaves) is refused without expanding it."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    result = load_or_error(model, yaml_file("\n".join(lines) + "\n"))
    assert isinstance(result, ConfigError)


def test_missing_file_folder_and_unreadable_file(tmp_path: Path) -> None:
    for model in MODELS:
        assert "not found" in str(load_or_error(model, tmp_path / "absent.yaml"))
        assert isinstance(load_or_error(model, tmp_path), ConfigError)


@settings(max_examples=100, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    name=st.text(alphabet=st.characters(codec="ascii"), min_size=1, max_size=30),
    value=st.text(max_size=40) | st.sampled_from(["[" * 600, "{" * 600, "!!binary x", "*alias", "&a [*a]"]),
)
def test_environment_variables(model: type[BaseModel], name: str, value: str) -> None:
    """Any ``MASKWATCH_*`` variable: parsed as a YAML scalar or kept as text, then validated like the file."""
    if "\x00" in value or "\x00" in name:
        return
    environ = {"MASKWATCH_" + name: value}
    assert isinstance(env_overrides(environ), dict)
    load_or_error(model, environ=environ)


@settings(max_examples=100, deadline=None)
@given(
    items=st.lists(
        st.text(max_size=30) | st.sampled_from(["a=" + "[" * 600, "=1", "a.=1", ".=x", "a..b=2"]), max_size=4
    )
)
def test_set_options(items: list[str]) -> None:
    try:
        overrides = parse_set_options(items)
    except ConfigError as exc:
        assert "KEY=VALUE" in str(exc)
        return
    for model in MODELS:
        load_or_error(model, overrides=overrides)


@settings(max_examples=300)
@given(
    st.text(max_size=30)
    | st.sampled_from(
        ["h:²", "h:٣", "h:0", "h:65536", "[::1]:", "[::1", ":1", "h::1", "h:1:2", " h:1 ", "h:+1", "h:-1", "h:1_0"]
    )
)
def test_host_port(value: str) -> None:
    try:
        host, port = parse_host_port(value)
    except ConfigError as exc:
        assert "HOST:PORT" in str(exc)
        return
    assert host and 0 < port < 65536


@pytest.mark.parametrize(
    "model,dotted",
    [
        (EdgeConfig, "site"),
        (EdgeConfig, "node"),
        (HubConfig, "hub_id"),
        (HubConfig, "ingest.share_group"),
        (HubConfig, "sites"),
    ],
)
@pytest.mark.parametrize("odd", ["hq\n", "hq\r", "h q", "Hq", "", "x" * 65, "hq/x", "+", "#"])
def test_ids_in_configs_are_matched_in_full(model: type[BaseModel], dotted: str, odd: str) -> None:
    """A trailing newline (which Python's ``re.match(...$)`` lets through) is no valid id either."""
    value: Any = [odd] if dotted == "sites" else odd
    assert isinstance(load_or_error(model, overrides=tree(dotted, value)), ConfigError)
