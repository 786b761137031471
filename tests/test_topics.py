"""Topic building and parsing: round trips, bad ids rejected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.errors import ContractError
from shared.messages import COMMANDS
from shared.topics import (
    NodeTopics,
    TopicInfo,
    alerts,
    alerts_filter,
    node_filter,
    parse_topic,
    shared_subscription,
    site_command,
)

ids = st.from_regex(r"[a-z0-9_-]{1,20}", fullmatch=True).filter(lambda s: s != "all")


def test_node_topics_layout() -> None:
    t = NodeTopics("hq", "door-1")
    assert t.status == "maskwatch/hq/door-1/status"
    assert t.events == "maskwatch/hq/door-1/events"
    assert t.state == "maskwatch/hq/door-1/state"
    assert t.stats == "maskwatch/hq/door-1/stats"
    assert t.desired == "maskwatch/hq/door-1/desired"
    assert t.snapshot("abc-1") == "maskwatch/hq/door-1/snapshot/abc-1"
    assert t.cmd("servo") == "maskwatch/hq/door-1/cmd/servo"
    assert t.response("servo") == "maskwatch/hq/door-1/response/servo"
    assert t.cmd_filter == "maskwatch/hq/door-1/cmd/+"
    assert t.site_cmd_filter == "maskwatch/hq/all/cmd/+"
    assert site_command("hq", "threshold") == "maskwatch/hq/all/cmd/threshold"
    assert alerts("hq") == "maskwatch/hq/alerts"


def test_filters() -> None:
    assert node_filter("events") == "maskwatch/+/+/events"
    assert node_filter("events", "hq") == "maskwatch/hq/+/events"
    assert node_filter("snapshot", "hq") == "maskwatch/hq/+/snapshot/+"
    assert alerts_filter() == "maskwatch/+/alerts"
    assert shared_subscription("hubs", "maskwatch/+/+/events") == "$share/hubs/maskwatch/+/+/events"


@given(site=ids, node=ids, name=st.sampled_from(sorted(COMMANDS)))
def test_round_trip(site: str, node: str, name: str) -> None:
    t = NodeTopics(site, node)
    for kind in ("status", "events", "state", "stats", "desired"):
        assert parse_topic(getattr(t, kind)) == TopicInfo(site, node, kind)
    assert parse_topic(t.cmd(name)) == TopicInfo(site, node, "cmd", name)
    assert parse_topic(t.response(name)) == TopicInfo(site, node, "response", name)
    assert parse_topic(site_command(site, name)) == TopicInfo(site, "all", "cmd", name)
    assert parse_topic(alerts(site)) == TopicInfo(site, None, "alerts")


@pytest.mark.parametrize(
    "site,node",
    [("HQ", "n1"), ("hq", "n 1"), ("", "n"), ("hq", "a/b"), ("hq", "+"), ("hq", "#"), ("x" * 65, "n"), ("hq", "nœud")],
)
def test_bad_ids_rejected(site: str, node: str) -> None:
    with pytest.raises(ContractError) as info:
        NodeTopics(site, node)
    assert info.value.reason == "topic"
    assert "must match" in str(info.value)


@pytest.mark.parametrize(
    "topic",
    [
        "other/hq/n1/events",
        "maskwatch/hq",
        "maskwatch/hq/n1/bogus",
        "maskwatch/hq/n1/events/extra",
        "maskwatch/HQ/n1/events",
        "maskwatch/hq/all/events",
        "maskwatch/hq/n1/snapshot/bad id",
        "maskwatch/hq/n1/cmd/Servo!",
    ],
)
def test_bad_topics_rejected(topic: str) -> None:
    with pytest.raises(ContractError):
        parse_topic(topic)


def test_bad_command_name_rejected() -> None:
    with pytest.raises(ContractError, match="invalid command name"):
        NodeTopics("hq", "n1").cmd("a/b")
