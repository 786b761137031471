"""Subcommands of ``maskwatch`` provided by the hub package.

``hub`` runs the hub; ``events``, ``nodes`` and ``prune`` read or clean its
database (or, for ``events``/``nodes``, its API); ``servo``, ``threshold``, ``schedule`` and
``alerts`` talk MQTT directly, so they work without a hub; so do ``model push`` and ``model status``, actions
of the ``model`` command shared with the models package (:func:`shared.cli.command_group`). Command exit codes:
0 the node answered ``ok``, 1 it answered ``error`` (printed), 3 no answer in time, 4 the ``--db`` registry
never saw the node (nothing sent; ``--force`` sends anyway).
Modules of the hub extra (SQLAlchemy, FastAPI, uvicorn) are imported inside the handlers, so
``maskwatch --help`` works without it.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import queue
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast, get_args

from hub.config import HubConfig, hash_token
from hub.services.auth import new_token
from hub.views import ExportFormat
from shared import topics
from shared.cli import (
    SERVO_ANGLE_TEXT,
    address,
    argument_type,
    command_group,
    finite_float,
    node_id,
    node_list,
    positive_int,
    seconds,
    servo_angle,
    site_id,
)
from shared.config import load_config, merge, parse_host_port, parse_set_options
from shared.errors import ConfigError, MaskwatchError
from shared.messages import Alert, parse
from shared.mqtt import MqttClient, Received
from shared.schedule import check_timezone, window_spec
from shared.vocabulary import Label, ServoMode, check_threshold

if TYPE_CHECKING:
    from hub.services.commands import Outcome
    from hub.storage.database import Store
    from hub.storage.events import EventFilter

log = logging.getLogger(__name__)

RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: How long ``alerts`` without ``--timeout`` waits for the broker before giving up.
CONNECT_WAIT_S = 10.0
#: The shortest wait for a command's answers once connected (a connect that used up the timeout still sends).
MIN_ANSWER_WAIT_S = 0.01
EXIT_TIMEOUT = 3
#: How long ``model push --all`` collects the nodes' retained states before choosing the nodes.
RETAINED_WAIT_S = 1.0

#: Characters copied at a time from a streamed API export.
STREAM_CHUNK_CHARS = 1 << 16

#: Exit code of a command refused because the registry never saw the node.
EXIT_UNKNOWN_NODE = 4
#: What the exit status of a node command means (its --help says it).
COMMAND_EXITS = (
    "Exit 0 on 'ok', 1 on an 'error' answer, 3 when no answer came in time, "
    f"{EXIT_UNKNOWN_NODE} when the --db registry never saw the node (nothing sent; --force sends anyway)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `maskwatch` parser."""
    _add_hub(subparsers)
    _add_events(subparsers)
    _add_nodes(subparsers)
    _add_servo(subparsers)
    _add_threshold(subparsers)
    _add_model_actions(command_group(subparsers, "model"))
    _add_schedule(subparsers)
    _add_alerts(subparsers)
    _add_prune(subparsers)


# -- argument groups --------------------------------------------------------------


def _config_options(parser: argparse.ArgumentParser, *, db: bool = True, broker: bool = False) -> None:
    parser.add_argument("--config", metavar="FILE", help="hub YAML config (broker, db_url...; see docs/hub.md)")
    if db:
        parser.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default sqlite:///maskwatch.db)")
    if broker:
        parser.add_argument("--broker", type=address, metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")


def _source_options(parser: argparse.ArgumentParser) -> None:
    _config_options(parser, db=False)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--db", metavar="URL", help="SQLAlchemy URL (default sqlite:///maskwatch.db)")
    source.add_argument("--api", metavar="URL", help="read from a hub's API (e.g. http://hub:8080) instead")
    parser.add_argument("--token", metavar="TOKEN", help="API token (or MASKWATCH_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _add_hub(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "hub",
        help="run the hub: durable ingest, registry, alerts, commands, REST API",
        description="Run the hub: store every event of the configured sites in the database (batched, "
        "acknowledged after commit, de-duplicated), keep the node registry, publish alerts, "
        "serve the REST API. The database is created or upgraded on start. "
        "Stops cleanly on SIGINT/SIGTERM.",
        epilog="Examples:\n  maskwatch hub --broker 10.0.0.5:1883 --db sqlite:///var/lib/maskwatch/hub.db\n"
        "  maskwatch hub --config hub.yaml --http 0.0.0.0:8080\n"
        "  maskwatch hub --new-token ops     # prints a token and the line for auth.tokens",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_options(parser, broker=True)
    parser.add_argument("--http", metavar="HOST:PORT", help="API address (default 127.0.0.1:8080)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a config key, e.g. --set ingest.batch_size=200 (repeatable)",
    )
    parser.add_argument("--new-token", metavar="NAME", help="create an API token, print it and its config entry, exit")
    parser.set_defaults(handler=run_hub)


def _add_events(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "events",
        help="list or export stored events",
        description="List stored events, newest first by the hub's time of receipt (RECEIVED_AT): one page of "
        "--limit events as a table, CSV, JSON or JSON lines; with --all, every matching event, read --limit at a "
        "time and streamed, so any number of events exports in constant memory (CSV columns as /api/events.csv). "
        "FIRST_SEEN is the node's clock, and CLOCK says 'skewed' when it was more than clock.max_skew_s off the "
        "hub's. --since/--until select by the time of receipt.",
        epilog="Examples:\n  maskwatch events --site hq --label no_mask --since 2h\n"
        "  maskwatch events --api http://hub:8080 --token $T --json --limit 500\n"
        "  maskwatch events --all --format csv --since 7d --output week.csv\n"
        "  maskwatch events --all --format jsonl --site hq | gzip > hq.jsonl.gz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _source_options(parser)
    parser.add_argument("--site", type=site_id, help="only this site")
    parser.add_argument("--node", type=node_id, help="only this node")
    parser.add_argument("--label", choices=get_args(Label), help="only this final label")
    parser.add_argument("--since", metavar="TIME", help="ISO time, or a duration ago: 30m, 2h, 7d")
    parser.add_argument("--until", metavar="TIME", help="ISO time, or a duration ago")
    parser.add_argument(
        "--limit",
        type=positive_int,
        default=50,
        help="at most this many (default 50, max 1000); with --all, the size of one page read",
    )
    parser.add_argument("--all", action="store_true", help="every matching event, paged (needs --format or --json)")
    parser.add_argument(
        "--format",
        choices=("table", *get_args(ExportFormat)),
        help="table (default), csv, json (one array) or jsonl (one object per line); --json is --format json",
    )
    parser.add_argument("--output", metavar="FILE", help="write to FILE (complete once the command succeeds)")
    parser.set_defaults(handler=run_events)


def _add_nodes(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nodes",
        help="list known nodes and their status",
        description="List every node the hub knows: status, last seen, model, state, delivery, and CLOCK "
        "('off by +N s' when the node's clock, measured on its stats, is more than clock.max_skew_s off the hub's).",
    )
    _source_options(parser)
    parser.add_argument("--site", type=site_id, help="only this site")
    parser.add_argument(
        "--forget",
        metavar="SITE/NODE",
        help="remove this node from the registry and clear the retained topics the hub publishes for it "
        "(desired, summary, Home Assistant discovery); through --api, or --db and --broker",
    )
    parser.add_argument("--broker", type=address, metavar="HOST:PORT", help="MQTT broker for --forget with --db")
    parser.set_defaults(handler=run_nodes)


def _command_options(parser: argparse.ArgumentParser) -> None:
    _config_options(parser, db=False, broker=True)
    parser.add_argument("--site", required=True, type=site_id, help="site id")
    parser.add_argument(
        "--node", required=True, type=node_list, help="node id, a comma-separated list, or 'all' (every node)"
    )
    parser.add_argument("--timeout", type=seconds, metavar="S", help="seconds to wait for the answer (default 5)")
    parser.add_argument("--db", metavar="URL", help="also record the command in this hub database's audit table")
    parser.add_argument("--json", action="store_true", help="print the answers as JSON")
    parser.add_argument(
        "--force", action="store_true", help="send to a node the --db registry has never seen (refused otherwise)"
    )


def _add_servo(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "servo",
        help="move a node's servo or change its mode",
        description="Send a servo command over MQTT and wait for the answer. " + COMMAND_EXITS,
        epilog="Examples:\n  maskwatch servo --site hq --node door-1 --angle 30\n"
        "  maskwatch servo --site hq --node all --mode sweep",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _command_options(parser)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--angle", type=servo_angle, metavar="DEG", help=f"go to this angle, {SERVO_ANGLE_TEXT} (mode becomes hold)"
    )
    target.add_argument("--mode", choices=[mode.value for mode in ServoMode], help="servo mode")
    parser.set_defaults(handler=run_servo)


def _add_threshold(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "threshold",
        help="set a node's no-mask threshold",
        description="Set the no-mask probability threshold of a node over MQTT and wait for the answer. "
        + COMMAND_EXITS,
    )
    _command_options(parser)
    parser.add_argument("value", type=finite_float, metavar="VALUE", help="threshold in 0..1")
    parser.set_defaults(handler=run_threshold)


def _add_model_actions(actions: argparse._SubParsersAction) -> None:
    push = actions.add_parser(
        "push",
        help="send a classifier .tflite to nodes (verified, smoke-tested, rolled back if bad)",
        description="Send FILE to the nodes over MQTT (chunks on maskwatch/<site>/<node>/model/<sha256>) and the "
        "'model' command. Each node checks size and sha256, loads the model, runs a smoke inference on built-in faces, "
        "swaps it in between two frames and watches its capacity (frames per second of processing) for "
        "--probation seconds; a model that fails to load, fails the smoke check or halves the capacity is refused "
        "or rolled back, and the answer says why. With --canary K the first K nodes take it first; the rest "
        "follow only if the canaries stay healthy for --canary-wait seconds. Exit 0 when every node answered "
        "'ok', 1 on an 'error', 3 on no answer.",
        epilog="Examples:\n  maskwatch model push --site hq --node door-1 mask_v2.tflite\n"
        "  maskwatch model push --site hq --all --canary 1 --canary-wait 60 mask_v2.tflite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_options(push, db=False, broker=True)
    push.add_argument("--site", required=True, type=site_id, help="site id")
    target = push.add_mutually_exclusive_group(required=True)
    target.add_argument("--node", type=node_list, help="node id or a comma-separated list")
    target.add_argument("--all", action="store_true", help="every node of the site that is online")
    push.add_argument("--canary", type=positive_int, metavar="K", help="push to K nodes first")
    push.add_argument(
        "--canary-wait", type=seconds, default=30.0, metavar="S", help="canaries must stay healthy this long (30)"
    )
    push.add_argument("--probation", type=seconds, default=5.0, metavar="S", help="fps watch after the swap (5)")
    push.add_argument("--name", help="model name the nodes report (default: FILE's stem)")
    push.add_argument("--timeout", type=seconds, default=120.0, metavar="S", help="wait per answer (default 120)")
    push.add_argument("--json", action="store_true", help="print the answers as JSON")
    push.add_argument("file", type=Path, metavar="FILE", help="the classifier .tflite")
    push.set_defaults(handler=run_model_push)

    status = actions.add_parser(
        "status",
        help="list the model each node of a site runs",
        description="Read the nodes' retained state over MQTT and list model, sha256, availability and the "
        "last refused push of each.",
    )
    _config_options(status, db=False, broker=True)
    status.add_argument("--site", required=True, type=site_id, help="site id")
    status.add_argument("--wait", type=seconds, default=1.0, metavar="S", help="collect states this long (1)")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(handler=run_model_status)


def _add_schedule(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "schedule",
        help="set a node's schedule: detection hours, opening hours (servo parked outside), quiet hours",
        description="Replace a node's schedule over MQTT and wait for the answer; the hub keeps it in the node's "
        "retained desired config (with --db), so a node that was away applies it when it reconnects.\n\n"
        "Windows are wall-clock times of --timezone (daylight saving time included), written "
        "[DAYS ]HH:MM-HH:MM: DAYS is daily (the default), a day (mon..sun), a range (mon-fri) or a list "
        "(mon,wed,sat-sun); an end not after the start runs past midnight (the days name the day it starts); "
        "24:00 is the end of the day. Repeat an option for several windows.\n\n"
        "Without --detect the node detects at any time; without --open it is always open; without --quiet it "
        "has no quiet hours. So a schedule of only --timezone lifts every restriction. Quiet-hours events are "
        "stored by the hub but raise no alert.\n\n" + COMMAND_EXITS,
        epilog="Examples:\n"
        "  maskwatch schedule --site hq --node door-1 --timezone Europe/Berlin \\\n"
        "      --detect 'mon-fri 07:00-19:00' --detect 'sat 09:00-13:00' --open 'mon-fri 08:00-18:00' \\\n"
        "      --quiet '22:00-06:00' --park-deg 0\n"
        "  maskwatch schedule --site hq --node all --timezone UTC      # lift every restriction",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _command_options(parser)
    parser.add_argument(
        "--timezone",
        required=True,
        type=argument_type(check_timezone),
        metavar="TZ",
        help="IANA time zone, e.g. Europe/Berlin",
    )
    for option, what in (
        ("--detect", "detection runs only in these windows"),
        ("--open", "opening hours: outside them the servo is parked"),
        ("--quiet", "quiet hours: events are stored but raise no alert"),
    ):
        parser.add_argument(option, type=argument_type(window_spec), action="append", metavar="WINDOW", help=what)
    parser.add_argument(
        "--park-deg", type=servo_angle, metavar="DEG", help=f"where the servo is parked, {SERVO_ANGLE_TEXT} (default 0)"
    )
    parser.set_defaults(handler=run_schedule)


def _add_alerts(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "alerts",
        help="follow the alerts of a site",
        description="Subscribe to maskwatch/<site>/alerts and print each alert as it comes (Ctrl-C to stop).",
    )
    _config_options(parser, db=False, broker=True)
    parser.add_argument("--site", required=True, type=site_id, help="site id")
    parser.add_argument("--json", action="store_true", help="print each alert as one JSON line")
    parser.add_argument("--count", type=positive_int, metavar="N", help="exit after N alerts")
    parser.add_argument("--timeout", type=seconds, metavar="S", help="with --count: give up after S seconds (exit 3)")
    parser.set_defaults(handler=run_alerts)


def _add_prune(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prune",
        help="delete old events, snapshots, alerts and rejected payloads",
        description="Delete what is older than the retention (retention.days in the config, or --days).",
    )
    _config_options(parser)
    parser.add_argument("--days", type=finite_float, help="keep this many days (default: retention.days, 30)")
    parser.add_argument("--snapshot-dir", metavar="DIR", help="snapshot folder (default: snapshot_dir)")
    parser.set_defaults(handler=run_prune)


# -- shared helpers ---------------------------------------------------------------


def load_hub_config(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> HubConfig:
    """The hub config from ``--config``, the environment and the named options."""
    named: dict[str, Any] = dict(extra or {})
    if getattr(args, "db", None):
        named["db_url"] = args.db
    if getattr(args, "broker", None):
        host, port = parse_host_port(args.broker)
        named["broker"] = {"host": host, "port": port}
    return load_config(HubConfig, args.config, overrides=named)


def parse_time(value: str | None, now: datetime | None = None) -> datetime | None:
    """``30m``/``2h``/``7d`` ago, or an ISO 8601 time (UTC when no zone is given)."""
    if value is None:
        return None
    match = RELATIVE.match(value.strip())
    if match:
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=float(match[1]) * UNIT_SECONDS[match[2]])
        except OverflowError:
            raise ConfigError(f"duration {value!r} reaches before the year 1") from None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"expected an ISO time or a duration like 30m, 2h, 7d; got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as an aligned text table (the one formatter of the CLI's human output)."""
    cells = [[("" if row.get(c) is None else str(row.get(c))) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


@contextmanager
def _api_response(
    method: str, base: str, path: str, params: dict[str, Any] | None, token: str | None, accept: str
) -> Iterator[Any]:
    """An open response of ``method`` on a hub API; errors become :class:`MaskwatchError`."""
    query = urllib.parse.urlencode({k: v for k, v in (params or {}).items() if v is not None})
    url = f"{base.rstrip('/')}{path}" + (f"?{query}" if query else "")
    request = urllib.request.Request(url, headers={"Accept": accept}, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            yield response
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        raise MaskwatchError(f"{url}: HTTP {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise MaskwatchError(f"cannot reach the API at {base}: {exc}") from None


def api_get(base: str, path: str, params: dict[str, Any], token: str | None) -> Any:
    """GET a JSON document from a hub API; errors become :class:`MaskwatchError`."""
    return api_request("GET", base, path, token, params)


def api_request(method: str, base: str, path: str, token: str | None, params: dict[str, Any] | None = None) -> Any:
    """Send ``method`` to a hub API and return its JSON answer; errors become :class:`MaskwatchError`."""
    with _api_response(method, base, path, params, token, "application/json") as response:
        return json.load(response)


def api_stream(base: str, path: str, params: dict[str, Any], token: str | None, out: TextIO) -> None:
    """GET a text document from a hub API and copy it to ``out`` as it arrives."""
    with _api_response("GET", base, path, params, token, "*/*") as response:
        text = io.TextIOWrapper(response, encoding="utf-8", newline="")
        while chunk := text.read(STREAM_CHUNK_CHARS):
            out.write(chunk)


def _token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("MASKWATCH_TOKEN")


def open_store(url: str) -> Store:
    """The hub database at ``url``, which must already hold the hub schema."""
    from hub.storage.database import Store

    store = Store(url)
    store.require_schema()
    return store


def _print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


# -- handlers ---------------------------------------------------------------------


def run_hub(args: argparse.Namespace) -> int:
    """``maskwatch hub``: run until SIGINT/SIGTERM."""
    if args.new_token:
        token = new_token()
        print(
            f"token for {args.new_token} (shown once; give it to the client):\n  {token}\n"
            f"add to the hub config under auth.tokens:\n  - {{name: {args.new_token}, sha256: {hash_token(token)}}}"
        )
        return 0
    from hub.app import HubApp

    logging.getLogger("alembic").setLevel(logging.WARNING)  # the store says "upgrading database" itself
    named: dict[str, Any] = {}
    if args.http:
        host, port = parse_host_port(args.http, default_port=8080)
        named["http"] = {"host": host, "port": port}
    config = load_hub_config(args, merge(parse_set_options(args.overrides), named))
    HubApp(config).run()
    return 0


def run_events(args: argparse.Namespace) -> int:
    """``maskwatch events``: print a page of events as a table, or export them (one page, or all with --all)."""
    if not 1 <= args.limit <= 1000:
        raise ConfigError("--limit must be within 1..1000")
    if args.json and args.format not in (None, "json"):
        raise ConfigError(f"--json and --format {args.format} disagree: give one")
    fmt = "json" if args.json else args.format or "table"
    if args.all and fmt == "table":
        raise ConfigError("--all streams every event: give --format csv, json or jsonl")
    since, until = parse_time(args.since), parse_time(args.until)
    from hub.storage.events import EventFilter

    filters = EventFilter(args.site, args.node, args.label, since, until)
    if fmt == "table":
        items = _event_page(args, filters)
        with _output(args.output) as out:
            table = [{**item, "clock": "skewed" if item.get("clock_skewed") else None} for item in items]
            columns = ("received_at", "first_seen", "site", "node", "label", "best_score", "state", "clock", "id")
            out.write(format_table(table, columns) + "\n")
        return 0
    _export_events(args, cast(ExportFormat, fmt), filters)  # one of the argparse choices
    return 0


def _export_events(args: argparse.Namespace, fmt: ExportFormat, filters: EventFilter) -> None:
    """Write the first ``--limit`` matching events, or with ``--all`` every one, in ``fmt``."""
    limit = None if args.all else args.limit
    with _output(args.output) as out:
        if args.api:
            api_stream(args.api, f"/api/events.{fmt}", {**_api_filters(filters), "limit": limit}, _token(args), out)
            return
        from hub.storage.events import EventLog
        from hub.views import export_events

        config = load_hub_config(args)
        store = open_store(config.db_url)
        try:
            pages = EventLog(store, config.snapshot_dir).pages(filters, page_size=args.limit, limit=limit)
            for chunk in export_events(pages, fmt, _public_url(config)):
                out.write(chunk)
        finally:
            store.close()


def _api_filters(filters: EventFilter) -> dict[str, Any]:
    """An event filter as API query parameters."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in asdict(filters).items()}


def _event_page(args: argparse.Namespace, filters: EventFilter) -> list[dict[str, Any]]:
    """The first ``--limit`` matching events as API JSON objects (from the API or the database)."""
    if args.api:
        return api_get(args.api, "/api/events", {**_api_filters(filters), "limit": args.limit}, _token(args))["items"]
    from hub.storage.events import EventLog
    from hub.views import event_json

    config = load_hub_config(args)
    store = open_store(config.db_url)
    try:
        event_log = EventLog(store, config.snapshot_dir)
        rows, _total = event_log.query(filters, limit=args.limit)
        snaps = event_log.has_snapshots([r.id for r in rows])
        return [event_json(r, r.id in snaps, _public_url(config)) for r in rows]
    finally:
        store.close()


def _public_url(config: HubConfig) -> str:
    return (config.http.public_url or f"http://{config.http.host}:{config.http.port}").rstrip("/")


@contextmanager
def _output(path: str | None) -> Iterator[TextIO]:
    """Standard output, or ``path`` written as ``path.part`` and renamed once the whole output is written (a
    failed export leaves no truncated file behind)."""
    if path is None:
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    partial = target.with_name(target.name + ".part")
    try:
        with open(partial, "w", encoding="utf-8", newline="") as fh:
            yield fh
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


#: Stats fields ``maskwatch nodes`` shows: how a node's delivery is going.
NODE_DELIVERY_COLUMNS = ("outbox_depth", "outbox_unacked", "outbox_oldest_s", "delivery_error")


def clock_mark(offset_s: float | None, skewed: bool | None) -> str | None:
    """``maskwatch nodes``' clock column: ``off by +3600s`` for a node whose clock is skewed, else empty."""
    return f"off by {offset_s:+.0f}s" if skewed and offset_s is not None else None


def run_nodes(args: argparse.Namespace) -> int:
    """``maskwatch nodes``: print the registry, or forget one node."""
    if args.forget:
        return forget_node(args)
    if args.api:
        items = api_get(args.api, "/api/nodes", {"site": args.site}, _token(args))
    else:
        from hub.storage.nodes import Registry
        from hub.views import node_json

        store = open_store(load_hub_config(args).db_url)
        try:
            items = [node_json(row) for row in Registry(store).nodes(args.site)]
        finally:
            store.close()
    if args.json:
        _print_json(items)
    else:
        rows = [
            {
                **item,
                "threshold": (item.get("state") or {}).get("threshold"),
                "servo": ((item.get("state") or {}).get("servo") or {}).get("mode"),
                **{key: (item.get("stats") or {}).get(key) for key in NODE_DELIVERY_COLUMNS},
                "clock": clock_mark(item.get("clock_offset_s"), item.get("clock_skewed")),
            }
            for item in items
        ]
        print(
            format_table(
                rows,
                ("site", "node", "status", "last_seen", "model", "threshold", "servo", *NODE_DELIVERY_COLUMNS, "clock"),
            )
        )
    return 0


def _cli_client(config: HubConfig) -> MqttClient:
    """An MQTT client of one CLI run (its own random client id)."""
    return MqttClient(config.broker.model_copy(update={"client_id": None}), f"maskwatch-cli-{uuid.uuid4().hex[:8]}")


def forget_node(args: argparse.Namespace) -> int:
    """``maskwatch nodes --forget SITE/NODE``: through the API (``DELETE``) or the database and the broker."""
    site, _, node = args.forget.partition("/")
    if args.api:
        cleared = api_request("DELETE", args.api, f"/api/nodes/{site}/{node}", _token(args))["cleared"]
    else:
        from hub.services.commands import Commander
        from hub.storage.nodes import Registry

        config = load_hub_config(args)
        store = open_store(config.db_url)
        client = _cli_client(config)
        client.start()
        try:
            if not client.wait_connected(config.command_timeout_s):
                raise MaskwatchError(f"cannot reach the broker {config.broker.address}: {client.last_error}")
            commander = Commander(client, timeout_s=config.command_timeout_s, store=store, registry=Registry(store))
            cleared = commander.forget(site, node)
        finally:
            client.stop()
            store.close()
    print(f"forgot {site}/{node}; cleared retained: {', '.join(cleared)}")
    return 0


def send_command(args: argparse.Namespace, name: str, params: dict[str, Any]) -> int:
    """Send one command over MQTT, print the answers, return 0/1/3."""
    from hub.services.commands import Commander, UnknownNode
    from hub.storage.nodes import Registry

    config = load_hub_config(args)
    store = registry = None
    if args.db:
        store = open_store(args.db)
        registry = Registry(store)
    client = _cli_client(config)
    commander = Commander(client, timeout_s=args.timeout or config.command_timeout_s, store=store, registry=registry)
    deadline = time.monotonic() + commander.timeout_s  # connecting counts against the timeout
    commander.listen(args.site)
    client.start()
    try:
        if not client.wait_connected(commander.timeout_s):
            raise MaskwatchError(f"cannot reach the broker {config.broker.address}: {client.last_error}")
        outcomes = commander.send(
            args.site,
            None if args.node == "all" else args.node.split(","),
            name,
            params,
            source="cli",
            timeout_s=max(MIN_ANSWER_WAIT_S, deadline - time.monotonic()),
            force=args.force,
        )
    except UnknownNode as exc:
        print(f"maskwatch {name}: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN_NODE
    finally:
        client.stop()
        if store is not None:
            store.close()
    return print_outcomes(outcomes, name, commander.timeout_s, args.json)


def print_outcomes(outcomes: Sequence[Outcome], name: str, timeout_s: float, as_json: bool) -> int:
    """Print the answers to a command (one line each, or JSON); return the exit code 0/1/3."""
    from hub.services.commands import CommandStatus, overall_status

    exit_codes = {CommandStatus.OK: 0, CommandStatus.ERROR: 1, CommandStatus.TIMEOUT: EXIT_TIMEOUT}
    if as_json:
        _print_json([o.to_json() for o in outcomes])
    else:
        for o in outcomes:
            if o.status == CommandStatus.OK:
                print(f"ok: {o.site}/{o.node} {name}" + (f" -> {json.dumps(o.value)}" if o.value is not None else ""))
            elif o.status == CommandStatus.ERROR:
                print(f"error: {o.site}/{o.node} {name}: {o.error}")
            else:
                print(f"timeout: no answer from {o.site}/{o.node} within {timeout_s:g} s")
    return exit_codes[overall_status(outcomes)]


def _fleet_client(args: argparse.Namespace) -> tuple[MqttClient, HubConfig]:
    config = load_hub_config(args)
    client = MqttClient(config.broker.model_copy(update={"client_id": None}), f"maskwatch-cli-{uuid.uuid4().hex[:8]}")
    return client, config


def _connect(client: MqttClient, config: HubConfig) -> None:
    client.start()
    if not client.wait_connected(CONNECT_WAIT_S):
        client.stop()
        raise MaskwatchError(f"cannot reach the broker {config.broker.address}: {client.last_error}")


def run_model_push(args: argparse.Namespace) -> int:
    """``maskwatch model push``."""
    from hub.services.commands import Commander
    from hub.services.rollout import FleetStates, Rollout

    try:
        data = args.file.read_bytes()
    except OSError as exc:
        raise MaskwatchError(f"cannot read {args.file}: {exc.strerror}") from None
    client, config = _fleet_client(args)
    commander = Commander(client, timeout_s=args.timeout)
    commander.listen(args.site)
    states = FleetStates(client, args.site)
    rollout = Rollout(client, commander, states, probation_s=args.probation)
    _connect(client, config)
    try:
        if args.all:
            time.sleep(RETAINED_WAIT_S)  # retained states arrive right after the subscription
            nodes = [n.node for n in states.nodes() if n.online]
            if not nodes:
                raise MaskwatchError(f"no node of site {args.site!r} is online")
        else:
            nodes = args.node.split(",")
        name = args.name or args.file.stem
        if args.canary:
            outcomes = rollout.canary(
                args.site, nodes, name, data, canaries=args.canary, wait_s=args.canary_wait, timeout_s=args.timeout
            )
        else:
            outcomes = rollout.push(args.site, nodes, name, data, args.timeout)
    finally:
        client.stop()
    return print_outcomes(outcomes, "model", args.timeout, args.json)


def run_model_status(args: argparse.Namespace) -> int:
    """``maskwatch model status``."""
    from hub.services.rollout import FleetStates

    client, config = _fleet_client(args)
    states = FleetStates(client, args.site)
    _connect(client, config)
    try:
        time.sleep(args.wait)  # retained states arrive right after the subscription
    finally:
        client.stop()
    rows = [
        {
            "node": n.node,
            "online": n.online,
            "model": n.model,
            "sha256": n.sha256,
            "model_error": n.error,
        }
        for n in states.nodes()
    ]
    if args.json:
        _print_json(rows)
    else:
        print(format_table(rows, ["node", "online", "model", "sha256", "model_error"]))
    return 0


def run_servo(args: argparse.Namespace) -> int:
    """``maskwatch servo``."""
    params = {"angle": args.angle} if args.angle is not None else {"mode": args.mode}
    return send_command(args, "servo", params)


def run_threshold(args: argparse.Namespace) -> int:
    """``maskwatch threshold``."""
    return send_command(args, "threshold", {"value": check_threshold(args.value)})


def run_schedule(args: argparse.Namespace) -> int:
    """``maskwatch schedule``."""
    fields: dict[str, Any] = {"timezone": args.timezone}
    for kind in ("detect", "open", "quiet"):
        if getattr(args, kind):
            fields[kind] = [window.model_dump(mode="json") for window in getattr(args, kind)]
    if args.park_deg is not None:
        fields["park_deg"] = args.park_deg
    return send_command(args, "schedule", {"schedule": fields})


def run_alerts(args: argparse.Namespace) -> int:
    """``maskwatch alerts``: print alerts until Ctrl-C (or --count)."""
    config = load_hub_config(args)
    inbox: queue.Queue[Received] = queue.Queue()
    client = MqttClient(
        config.broker.model_copy(update={"client_id": None}), f"maskwatch-alerts-{uuid.uuid4().hex[:8]}"
    )
    client.subscribe(topics.alerts(args.site), inbox.put, qos=1)
    client.start()
    seen = 0
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        if not client.wait_connected(CONNECT_WAIT_S if args.timeout is None else args.timeout):
            raise MaskwatchError(f"cannot reach the broker {config.broker.address}: {client.last_error}")
        print(f"following alerts of {args.site} on {config.broker.address} (Ctrl-C to stop)", file=sys.stderr)
        while args.count is None or seen < args.count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return EXIT_TIMEOUT
            try:
                message = inbox.get(timeout=min(remaining, 1.0) if remaining is not None else 1.0)
            except queue.Empty:
                continue
            try:
                alert = parse(Alert, message.payload)
            except MaskwatchError as exc:
                log.warning("ignoring malformed alert on %s: %s", message.topic, exc)
                continue
            seen += 1
            if args.json:
                print(alert.to_json().decode(), flush=True)
            else:
                detail = (
                    f"event {alert.event_id} score {alert.score:.2f}"
                    if alert.kind == "no_mask"
                    else alert.message or ""
                )
                link = f" {alert.snapshot_url}" if alert.snapshot_url else ""
                print(f"{alert.ts.isoformat()} {alert.kind} {alert.site}/{alert.node} {detail}{link}", flush=True)
    finally:
        client.stop()
    return 0


def run_prune(args: argparse.Namespace) -> int:
    """``maskwatch prune``: delete old data now."""
    config = load_hub_config(args)
    store = open_store(config.db_url)
    try:
        deleted = store.prune(
            args.days or config.retention.days, Path(args.snapshot_dir) if args.snapshot_dir else config.snapshot_dir
        )
    finally:
        store.close()
    print(format_table([{"table": k, "deleted": v} for k, v in deleted.items()], ("table", "deleted")))
    return 0
