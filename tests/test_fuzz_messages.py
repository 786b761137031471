"""Property-based fuzzing of every message parser and of the topic parser.

Each property is the contract's promise for any input: ``parse`` returns a model that serializes to strict JSON
and parses back equal, or raises :class:`ContractError` with a known reason and the offending field. Nothing
else ever escapes (no ``ValueError``, ``OverflowError``, ``RecursionError`` or serialization error later on).
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from shared.errors import ContractError
from shared.messages import (
    COMMANDS,
    MAX_PAYLOAD_BYTES,
    Ack,
    Alert,
    CommandResponse,
    DesiredConfig,
    Event,
    NodeState,
    NodeStats,
    parse,
)
from shared.topics import (
    HUBS,
    ID_PATTERN,
    NODE_KINDS,
    NodeTopics,
    parse_topic,
    validate_event_id,
    validate_id,
)

TS = "2026-01-01T12:00:00Z"
#: One valid payload per model: the seeds the near-valid strategies mutate.
VALID: dict[type[BaseModel], dict[str, Any]] = {
    Event: {
        "v": 1,
        "type": "update",
        "id": "hq-door-1-0001",
        "site": "hq",
        "node": "door-1",
        "ts": TS,
        "label": "mask",
        "score": 0.9,
        "box": [1, 2, 30, 40],
        "angle": 10.5,
        "frame": 7,
        "snapshot": True,
        "track": {"frames": 3, "first_seen": TS, "last_seen": TS},
        "seq": 12,
        "outbox_id": "0123456789abcdef",
    },
    NodeState: {
        "v": 1,
        "site": "hq",
        "node": "door-1",
        "ts": TS,
        "threshold": 0.5,
        "detect": True,
        "model": "m@1",
        "profile": "crowd",
        "source": "0",
        "servo": {"angle": 0.0, "mode": "sweep", "min_deg": -90.0, "max_deg": 90.0},
    },
    NodeStats: {
        "v": 1,
        "site": "hq",
        "node": "door-1",
        "ts": TS,
        "fps": 12.0,
        "stage_ms": {"detect": 4.5},
        "frames": 10,
        "dropped_frames": 1,
        "outbox_depth": 0,
        "outbox_dropped": 0,
        "events_published": 3,
        "reconnects": 0,
        "uptime_s": 5.0,
        "cpu_temp_c": 50.0,
        "camera_ok": True,
        "rejected": {"json": 1},
    },
    CommandResponse: {
        "v": 1,
        "request_id": "r1",
        "status": "ok",
        "site": "hq",
        "node": "door-1",
        "ts": TS,
        "value": {"angle": 3},
    },
    DesiredConfig: {"v": 1, "threshold": 0.4, "servo_mode": "hold", "servo_angle": 5.0, "detect": False},
    Alert: {
        "v": 1,
        "kind": "no_mask",
        "site": "hq",
        "node": "door-1",
        "ts": TS,
        "event_id": "e-1",
        "score": 0.8,
        "snapshot_url": "http://hub/e-1.jpg",
        "message": "hi",
    },
    Ack: {
        "v": 1,
        "hub": "hub",
        "ts": TS,
        "outbox_id": "0123456789abcdef",
        "seqs": [[1, 5], [7, 7]],
        "snapshots": ["hq-door-1-0001"],
    },
    COMMANDS["servo"]: {"v": 1, "request_id": "r1", "angle": 20.0, "mode": "hold", "dwell_s": 1.0},
    COMMANDS["threshold"]: {"v": 1, "request_id": "r1", "value": 0.3},
    COMMANDS["detect"]: {"v": 1, "request_id": "r1", "enabled": True},
    COMMANDS["snapshot"]: {"v": 1, "request_id": "r1"},
    COMMANDS["config"]: {"v": 1, "request_id": "r1"},
}
MODELS = list(VALID)
REASONS = {"json", "schema", "version", "oversize"}

ODD_TEXT = st.sampled_from(
    [
        "",
        " ",
        "\n",
        "hq\n",
        "\x00",
        "a/b",
        "+",
        "#",
        "$share",
        "all",
        "ALL",
        "é",
        "\u202e",
        "\ud7ff",
        "🙂",
        "x" * 65,
        "x" * 129,
        "x" * 5000,
        "0",
        "-1",
        "1e999",
        "NaN",
        "null",
        "true",
        "{}",
        "[]",
        "'; drop table events; --",
        "2026-13-45T25:61:61Z",
        "0001-01-01T00:00:00+01:00",
        "9999-12-31T23:59:59-01:00",
        "2026-01-01T12:00:00",
    ]
)
HUGE_NUMBERS = st.sampled_from(
    [
        2**31,
        2**53 + 1,
        2**63,
        2**64,
        10**40,
        -(10**40),
        10**400,
        1e308,
        -1e308,
        5e-324,
        -0.0,
        math.inf,
        -math.inf,
        math.nan,
    ]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | HUGE_NUMBERS | st.text(max_size=40) | ODD_TEXT
JSON_VALUES = st.recursive(
    SCALARS,
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10) | ODD_TEXT, kids, max_size=5),
    max_leaves=25,
)


def nested(depth: int, leaf: str = "1") -> str:
    """``depth`` levels of alternating lists and objects around ``leaf``, as JSON text."""
    opens = "".join("[" if i % 2 else '{"k":' for i in range(depth))
    closes = "".join("]" if i % 2 else "}" for i in reversed(range(depth)))
    return opens + leaf + closes


def strict_json(raw: bytes) -> Any:
    """Decode ``raw`` as standard JSON (no NaN or Infinity, which Python's json would accept)."""

    def reject(name: str) -> None:
        raise AssertionError(f"non-standard JSON constant {name} in {raw[:200]!r}")

    return json.loads(raw, parse_constant=reject)


def check(model: type[BaseModel], raw: bytes | str, mutated: str | None = None) -> BaseModel | ContractError:
    """The contract for any payload; ``mutated`` is the one top-level key that was changed, if known."""
    try:
        message = parse(model, raw)
    except ContractError as exc:
        assert exc.reason in REASONS, exc.reason
        assert str(exc)
        if mutated is not None and exc.field is not None:
            assert exc.field.split(".")[0] == mutated, (exc.field, mutated, str(exc))
        return exc
    assert isinstance(message, model)
    encoded = message.to_json()  # type: ignore[attr-defined]
    assert len(encoded) <= 2 * MAX_PAYLOAD_BYTES
    strict_json(encoded)
    assert parse(model, encoded) == message, "a parsed message must survive a round trip"
    return message


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_seed_payloads_are_valid(model: type[BaseModel]) -> None:
    assert isinstance(check(model, json.dumps(VALID[model])), model)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from(MODELS), data=st.data())
def test_near_valid_payload_one_field_changed(model: type[BaseModel], data: st.DataObject) -> None:
    """One key of a valid payload replaced by an adversarial value, removed, or added."""
    payload = dict(VALID[model])
    key = data.draw(st.sampled_from([*payload, "extra", "V", "id\x00"]), label="key")
    action = data.draw(st.sampled_from(["replace", "remove"]), label="action")
    if action == "remove" and key in payload:
        del payload[key]
    else:
        payload[key] = data.draw(JSON_VALUES, label="value")
    check(model, json.dumps(payload), mutated=key)


@settings(max_examples=100)
@given(model=st.sampled_from(MODELS), data=st.data())
def test_nested_field_changed(model: type[BaseModel], data: st.DataObject) -> None:
    """Changes inside nested objects (track, servo, stage_ms, value...) are caught and named too."""
    payload = json.loads(json.dumps(VALID[model]))
    nested_keys = [k for k, v in payload.items() if isinstance(v, dict | list)]
    if not nested_keys:
        return
    key = data.draw(st.sampled_from(nested_keys), label="key")
    inner = payload[key]
    if isinstance(inner, dict):
        inner[data.draw(st.sampled_from([*inner, "zz"]), label="inner")] = data.draw(JSON_VALUES, label="value")
    else:
        inner[data.draw(st.integers(0, len(inner) - 1), label="index")] = data.draw(JSON_VALUES, label="value")
    check(model, json.dumps(payload), mutated=key)


@pytest.mark.parametrize("depth", [30, 200, 900, 990, 1100, 30_000])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_deep_nesting_in_every_field(model: type[BaseModel], depth: int) -> None:
    """Deeply nested JSON in each field, and as the whole payload, never escapes as another error."""
    for key in [*VALID[model], "extra"]:
        payload = dict(VALID[model])
        payload[key] = "@@"
        text = json.dumps(payload).replace('"@@"', nested(depth))
        check(model, text, mutated=key)
    check(model, nested(depth))


def test_deep_value_in_a_response_is_rejected_not_crashing_later() -> None:
    """``value`` of a response is free-form, yet must stay serializable: depth beyond the bound is a schema error."""
    text = json.dumps(VALID[CommandResponse]).replace('{"angle": 3}', nested(500))
    result = check(CommandResponse, text)
    assert isinstance(result, ContractError) and result.field == "value"


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_nan_and_infinity_rejected_everywhere(model: type[BaseModel], value: float) -> None:
    """JSON has no NaN: a float field given NaN/Infinity (which Python's json decodes) is a schema error."""
    floats = [k for k, v in VALID[model].items() if isinstance(v, float)]
    for key in floats:
        result = check(model, json.dumps({**VALID[model], key: value}), mutated=key)
        assert isinstance(result, ContractError), f"{model.__name__}.{key} accepted {value}"


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_that_overflow_utc_are_rejected(ts: str) -> None:
    for model in (Event, NodeState, NodeStats, CommandResponse, Alert):
        result = check(model, json.dumps({**VALID[model], "ts": ts}), mutated="ts")
        assert isinstance(result, ContractError) and result.field == "ts"


@pytest.mark.parametrize(
    "key,value",
    [
        ("box", [0, 0, 2**31, 10]),
        ("box", [-(2**40), 0, 5, 5]),
        ("frame", 2**63),
        ("frame", -1),
        ("frame", "x" * 300),
    ],
)
def test_numbers_beyond_what_a_database_column_holds_are_rejected(key: str, value: Any) -> None:
    result = check(Event, json.dumps({**VALID[Event], key: value}), mutated=key)
    assert isinstance(result, ContractError) and result.field.split(".")[0] == key


def test_track_frames_bounded() -> None:
    track = {"frames": 2**31, "first_seen": TS, "last_seen": TS}
    result = check(Event, json.dumps({**VALID[Event], "track": track}), mutated="track")
    assert isinstance(result, ContractError) and result.field == "track.frames"


def test_oversize_boundary() -> None:
    """At the limit the payload is judged on its content; one byte over, it is rejected unread."""
    base = json.dumps({**VALID[Alert], "message": ""})
    at_limit = base.replace('"message": ""', '"message": "' + "m" * (MAX_PAYLOAD_BYTES - len(base)) + '"')
    assert len(at_limit) == MAX_PAYLOAD_BYTES
    assert isinstance(check(Alert, at_limit.encode()), Alert)
    over = check(Alert, at_limit.encode() + b" ")
    assert isinstance(over, ContractError) and over.reason == "oversize"


@settings(max_examples=200)
@given(model=st.sampled_from(MODELS), raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_random_bytes(model: type[BaseModel], raw: bytes) -> None:
    check(model, raw)


@settings(max_examples=200)
@given(model=st.sampled_from(MODELS), value=JSON_VALUES)
def test_random_json_documents(model: type[BaseModel], value: Any) -> None:
    check(model, json.dumps(value))


@settings(max_examples=100)
@given(model=st.sampled_from(MODELS), version=SCALARS)
def test_any_other_version_is_a_version_or_schema_error(model: type[BaseModel], version: Any) -> None:
    result = check(model, json.dumps({**VALID[model], "v": version}), mutated="v")
    if not isinstance(result, ContractError):
        assert version == 1


# -- topics ----------------------------------------------------------------------------------------------------

IDS = st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda s: "\n" not in s)
#: Site ids: ``hubs`` is reserved (``maskwatch/hubs/<hub>`` is hub presence).
SITE_IDS = IDS.filter(lambda s: s != HUBS)
ODD_IDS = st.sampled_from(["", "hq\n", "Hq", "a/b", "a+b", "#", "a b", "é", "x" * 65, "\x00", "a\tb", ".", ".."])


@settings(max_examples=200)
@given(
    st.text(max_size=80)
    | st.lists(st.text(max_size=12) | ODD_TEXT, max_size=6).map("/".join)
    | st.lists(
        st.sampled_from(
            ["maskwatch", "hq", "n1", "all", "events", "cmd", "servo", "snapshot", "alerts", "+", "#", "", "hq\n"]
        ),
        max_size=6,
    ).map("/".join)
)
def test_parse_topic_accepts_only_well_formed_topics(topic: str) -> None:
    try:
        info = parse_topic(topic)
    except ContractError as exc:
        assert exc.reason == "topic"
        return
    parts = topic.split("/")
    assert ID_PATTERN.fullmatch(info.site) and parts[1] == info.site
    if info.node is not None:
        assert ID_PATTERN.fullmatch(info.node) and parts[2] == info.node
    assert not any(c in topic for c in "+#\n\x00")


@given(site=SITE_IDS, node=IDS.filter(lambda n: n != "all"), kind=st.sampled_from(NODE_KINDS))
def test_node_topics_round_trip(site: str, node: str, kind: str) -> None:
    topic = getattr(NodeTopics(site, node), kind)
    assert parse_topic(topic) == type(parse_topic(topic))(site=site, node=node, kind=kind)


@settings(max_examples=50)
@given(
    site=SITE_IDS,
    node=IDS.filter(lambda n: n != "all"),
    event_id=st.from_regex(r"[A-Za-z0-9_.:-]{1,128}", fullmatch=True),
)
def test_snapshot_topics_round_trip(site: str, node: str, event_id: str) -> None:
    if "\n" in event_id:
        return
    info = parse_topic(NodeTopics(site, node).snapshot(event_id))
    assert (info.site, info.node, info.kind, info.name) == (site, node, "snapshot", event_id)


@given(odd=ODD_IDS)
def test_odd_ids_rejected_in_topics_and_payloads(odd: str) -> None:
    with pytest.raises(ContractError):
        validate_id(odd)
    with pytest.raises(ContractError):
        NodeTopics("hq", odd)
    with pytest.raises(ContractError):
        parse_topic(f"maskwatch/hq/{odd}/events")
    result = check(Event, json.dumps({**VALID[Event], "node": odd}), mutated="node")
    assert isinstance(result, ContractError)


@given(odd=st.sampled_from(["", "e/1", "e+1", "e#1", "e\n", "e 1", "é", "\x00", "x" * 129]))
def test_odd_event_ids_rejected(odd: str) -> None:
    with pytest.raises(ContractError):
        validate_event_id(odd)
    result = check(Event, json.dumps({**VALID[Event], "id": odd}), mutated="id")
    assert isinstance(result, ContractError)
