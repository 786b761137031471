"""Subcommands of `maskwatch` provided by the edge package: ``maskwatch edge``."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from edge.config import load_edge_config
from shared.cli import address, existing_file, node_id, set_option, site_id
from shared.config import merge, parse_host_port, parse_set_options
from shared.messages import COMMANDS
from shared.shutdown import ShutdownSignals
from shared.vocabulary import Profile

log = logging.getLogger(__name__)

SOURCES_HELP = (
    "camera index (0), video file, RTSP/HTTP URL, image folder, 'picamera', "
    "'scene:DIR' or 'scene:builtin' (simulated panoramic camera on the servo)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `maskwatch` parser."""
    parser = subparsers.add_parser(
        "edge",
        help="run an edge node: camera -> faces -> mask -> events over MQTT",
        description="Run an edge node: capture frames, detect faces, classify mask / no mask, track each "
        "face into one event per visit and publish it over MQTT through a persistent outbox. "
        f"The node answers remote commands ({', '.join(COMMANDS)}).",
        epilog="Examples:\n  maskwatch edge --source scene:builtin --preview 127.0.0.1:8090\n"
        "  maskwatch edge --source photos/ --once --broker 10.0.0.5:1883 --site hq --node door-1\n"
        "Any config key can be set with --set KEY=VALUE (e.g. --set servo.mode=track) or "
        "MASKWATCH_KEY__SUB=VALUE.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=existing_file, metavar="FILE", help="YAML config file (see docs/edge.md)")
    parser.add_argument("--broker", type=address, metavar="HOST:PORT", help="MQTT broker (default 127.0.0.1:1883)")
    parser.add_argument("--site", type=site_id, help="site id ([a-z0-9_-], 1..64)")
    parser.add_argument("--node", type=node_id, help="node id ([a-z0-9_-], 1..64)")
    parser.add_argument("--source", metavar="SRC", help=SOURCES_HELP)
    parser.add_argument(
        "--profile",
        choices=[profile.value for profile in Profile],
        help="near: entrance camera, faces >= 48 px, fast; crowd: small faces, slower",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="process a file or folder to its end, deliver every event, exit (0: all delivered; "
        "1: source failed (cannot open, no image, or no frame for camera.stall_timeout_s), broker never "
        "reached or events left in the outbox)",
    )
    parser.add_argument(
        "--outbox", metavar="PATH", help="SQLite outbox file (default per site/node in ~/.local/state/maskwatch/)"
    )
    parser.add_argument(
        "--preview", type=address, metavar="HOST:PORT", help="serve an annotated MJPEG preview (off by default)"
    )
    parser.add_argument(
        "--set",
        type=set_option,
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override a config key (repeatable)",
    )
    parser.set_defaults(handler=run)


def overrides_from(args: argparse.Namespace) -> dict[str, Any]:
    """Config overrides from the command line (``--set`` first, the named options win)."""
    tree = parse_set_options(args.overrides)
    named: dict[str, Any] = {"site": args.site, "node": args.node, "source": args.source, "profile": args.profile}
    if args.broker:
        host, port = parse_host_port(args.broker)
        named["broker"] = {"host": host, "port": port}
    if args.outbox:
        named["outbox"] = {"path": args.outbox}
    if args.preview:
        named["preview"] = {"bind": args.preview}
    return merge(tree, named)


def run(args: argparse.Namespace) -> int:
    """``maskwatch edge``: run the node until SIGINT/SIGTERM (or, with --once, the end of the source)."""
    from edge.app import EdgeApp  # needs the edge extra (OpenCV, LiteRT)

    config = load_edge_config(args.config, overrides_from(args))
    app = EdgeApp(config, once=args.once)

    with ShutdownSignals(app.stopping):
        app.start()
        log.info(
            "node %s/%s: source %s, broker %s, outbox %s",
            config.site,
            config.node,
            config.source,
            config.broker.address,
            config.outbox_path(),
        )
        return app.wait()
