"""Config loading: YAML, environment and command-line overrides, clear errors for bad keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from shared.config import (
    BrokerConfig,
    StrictModel,
    env_overrides,
    load_config,
    parse_host_port,
    parse_set_options,
    redacted,
)
from shared.errors import ConfigError


class Servo(StrictModel):
    max_deg: float = Field(90, le=180)


class Sample(StrictModel):
    broker: BrokerConfig = BrokerConfig()
    servo: Servo = Servo()
    name: str = "n1"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_file_env_and_overrides_in_order(tmp_path: Path) -> None:
    path = write(tmp_path, "broker:\n  host: filehost\n  port: 1884\nname: fromfile\n")
    cfg = load_config(
        Sample,
        path,
        environ={"MASKWATCH_BROKER__PORT": "1999", "OTHER": "x"},
        overrides=parse_set_options(["name=cli", "servo.max_deg=45"]),
    )
    assert cfg.broker.host == "filehost"
    assert cfg.broker.port == 1999
    assert cfg.name == "cli"
    assert cfg.servo.max_deg == 45


def test_unknown_key_named(tmp_path: Path) -> None:
    path = write(tmp_path, "servo:\n  max_degs: 10\n")
    with pytest.raises(ConfigError, match=r"servo\.max_degs: unknown key"):
        load_config(Sample, path, environ={})


def test_unknown_nested_env_key_named() -> None:
    with pytest.raises(ConfigError, match=r"broker\.hots: unknown key"):
        load_config(Sample, environ={"MASKWATCH_BROKER__HOTS": "x"})


def test_other_roles_env_keys_ignored_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    cfg = load_config(Sample, environ={"MASKWATCH_DB": "sqlite:///x.db", "MASKWATCH_NAME": "n2"})
    assert cfg.name == "n2"
    assert "ignoring MASKWATCH_DB*" in caplog.text


def test_out_of_range_value_named(tmp_path: Path) -> None:
    path = write(tmp_path, "servo:\n  max_deg: 500\n")
    with pytest.raises(ConfigError, match=r"servo\.max_deg: Input should be less than or equal to 180"):
        load_config(Sample, path, environ={})


@pytest.mark.parametrize(
    "text,message",
    [
        ("broker: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("broker:\n  protocol: 4\n", "broker.protocol"),
        ("broker:\n  tls:\n    certfile: /x.pem\n", "certfile and tls.keyfile go together"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Sample, write(tmp_path, text), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Sample, tmp_path / "nope.yaml", environ={})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(Sample, write(tmp_path, ""), environ={}).name == "n1"


def test_env_values_parsed_as_yaml_scalars() -> None:
    assert env_overrides({"MASKWATCH_A__B": "12", "MASKWATCH_C": "true", "MASKWATCH_D": "x: [1"}) == {
        "a": {"b": 12},
        "c": True,
        "d": "x: [1",
    }


@pytest.mark.parametrize("value,expected", [("h", ("h", 1883)), ("h:1", ("h", 1)), ("[::1]:9", ("::1", 9))])
def test_host_port(value: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(value) == expected


@pytest.mark.parametrize("value", ["h:x", ":1", "h:70000"])
def test_bad_host_port(value: str) -> None:
    with pytest.raises(ConfigError, match="HOST:PORT"):
        parse_host_port(value)


def test_bad_set_option() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_options(["novalue"])


def test_redacted_hides_secrets() -> None:
    cfg = Sample(broker=BrokerConfig(username="u", password="hunter2"))
    out = redacted(cfg)
    assert out["broker"]["password"] == "***"
    assert out["broker"]["username"] == "u"


def test_edge_operating_point_defaults_to_the_profile_s_own() -> None:
    from edge.config import EdgeConfig
    from shared.vocabulary import Profile

    assert EdgeConfig().profile == Profile.NEAR
    for profile in Profile:
        config = EdgeConfig(profile=profile)
        assert config.operating_point() == profile.default_point
    crowd = Profile.CROWD.default_point
    assert EdgeConfig(profile="crowd", threshold=0.6).operating_point() == crowd._replace(threshold=0.6)
    assert EdgeConfig(profile="crowd", min_no_mask_detector_score=0.1).operating_point() == crowd._replace(
        min_no_mask_detector_score=0.1
    )
    assert EdgeConfig(profile="crowd", min_face_score=0.0).operating_point().min_face_score == 0.0  # 0 is given


def test_a_camera_is_reopened_no_sooner_than_it_is_reported_down(tmp_path: Path) -> None:
    from edge.config import EdgeConfig

    text = "camera:\n  stall_timeout_s: 20\n  reopen_after_s: 10\n"
    with pytest.raises(ConfigError, match=r"reopen_after_s \(10.0\) must not be under stall_timeout_s \(20.0\)"):
        load_config(EdgeConfig, write(tmp_path, text), environ={})
