"""The ``maskwatch`` command.

Subcommands come from the entry-point group ``maskwatch.commands``: each entry
is a ``register(subparsers)`` function of the edge, hub or models package, so
this module knows none of them. A provider's handler imports its heavy
dependencies when it runs; a missing optional dependency becomes exit code 2
with a one-line install hint.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from shared import __version__
from shared.config import parse_host_port, split_set_option
from shared.errors import ConfigError, MaskwatchError, MissingExtraError
from shared.topics import validate_id
from shared.vocabulary import SERVO_RANGE_DEG, check_servo_angle, check_threshold

T = TypeVar("T")

log = logging.getLogger("maskwatch")

#: Which extra provides each third-party top-level module (for the install hint).
EXTRA_OF_MODULE = {
    "cv2": "edge",
    "numpy": "edge",
    "ai_edge_litert": "edge",
    "tflite_runtime": "edge",
    "gpiozero": "edge",
    "sqlalchemy": "hub",
    "alembic": "hub",
    "fastapi": "hub",
    "uvicorn": "hub",
    "starlette": "hub",
    "tensorflow": "train",
    "keras": "train",
    "matplotlib": "train",
    "PIL": "train",
    "tqdm": "train",
}


#: The longest wait any command accepts (a day), so a timeout is a real bound and never overflows a clock.
MAX_TIMEOUT_S = 86_400.0


def finite_float(text: str) -> float:
    """An argparse type: a finite number (``nan``/``inf`` are a usage error, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


#: How a help text describes a servo angle option (:func:`servo_angle`).
SERVO_ANGLE_TEXT = f"{SERVO_RANGE_DEG[0]:g}..{SERVO_RANGE_DEG[1]:g} degrees, clamped to the node's limits"


def servo_angle(text: str) -> float:
    """An argparse type: a finite angle within :data:`~shared.vocabulary.SERVO_RANGE_DEG` degrees (the rule of
    :func:`~shared.vocabulary.check_servo_angle`; else a usage error, exit 2); a node clamps it to its own limits."""
    return argument_type(lambda t: check_servo_angle(finite_float(t), "the angle"))(text)


def _whole_number(minimum: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
        return value

    return convert


#: argparse types: a whole number of at least 1; of at least 0.
positive_int = _whole_number(1)
non_negative_int = _whole_number(0)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    value = finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """An argparse type: a finite number in the probability range (the rule of :func:`check_threshold`)."""
    return argument_type(lambda t: check_threshold(finite_float(t), "the value"))(text)


def argument_type(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser that raises :class:`ConfigError` or ``ValueError`` with a clear message."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except (ConfigError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


#: argparse types: a site id; a node id.
site_id = argument_type(lambda text: validate_id(text, "site"))
node_id = argument_type(lambda text: validate_id(text, "node"))


def node_list(text: str) -> str:
    """An argparse type: a node id, a comma-separated list of them, or ``all``; kept as given."""
    for node in text.split(","):
        node_id(node)
    return text


def address(text: str) -> str:
    """An argparse type: ``HOST[:PORT]`` (``[::1]:1883`` for IPv6), kept as given: its reader knows the default
    port."""
    argument_type(parse_host_port)(text)
    return text.strip()


def set_option(text: str) -> str:
    """An argparse type: a ``--set KEY=VALUE`` option, kept as given (:func:`parse_set_options` reads it)."""
    argument_type(split_set_option)(text)
    return text


def _existing(test: Callable[[Path], bool], problem: str) -> Callable[[str], Path]:
    def convert(text: str) -> Path:
        path = Path(text)
        if not test(path):
            raise argparse.ArgumentTypeError(f"{problem}: {text}")
        return path

    return convert


#: argparse types: a path to a file that exists; to a folder that exists; to either.
existing_file = _existing(Path.is_file, "file not found")
existing_dir = _existing(Path.is_dir, "folder not found")
existing_path = _existing(Path.exists, "no such file or folder")


def seconds(text: str) -> float:
    """An argparse type: a duration in seconds, above 0 and at most :data:`MAX_TIMEOUT_S`."""
    value = finite_float(text)
    if not 0 < value <= MAX_TIMEOUT_S:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, {MAX_TIMEOUT_S:.0f}], got {text!r}")
    return value


#: Commands whose actions come from more than one package: name -> (help, description).
COMMAND_GROUPS: dict[str, tuple[str, str]] = {
    "model": (
        "the mask model: fetch, train, export, evaluate; push to nodes, status",
        "Fetch third-party model files, train, export and evaluate the mask classifier (models package); "
        "push a classifier to the nodes of a site and list the model of each node (hub package).",
    ),
}
#: Attribute of a group's parser holding its actions.
_ACTIONS = "maskwatch_actions"


def command_group(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], name: str
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    """The actions of the command ``name`` of :data:`COMMAND_GROUPS`, created by the first package that asks.

    So ``maskwatch model train`` (models) and ``maskwatch model push`` (hub) share one command while neither
    package imports the other.
    """
    parser = subparsers.choices.get(name)
    if parser is None:
        help_text, description = COMMAND_GROUPS[name]
        parser = subparsers.add_parser(name, help=help_text, description=description)
        setattr(parser, _ACTIONS, parser.add_subparsers(dest="action", metavar="ACTION", required=True))
    actions: argparse._SubParsersAction[argparse.ArgumentParser] = getattr(parser, _ACTIONS)
    return actions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="maskwatch",
        description="Maskwatch: MQTT event-driven face-mask detection for multi-camera sites.",
        epilog="Run 'maskwatch COMMAND --help' for the options of each command. Docs: docs/.",
    )
    parser.add_argument("--version", action="version", version=f"maskwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in sorted(entry_points(group="maskwatch.commands"), key=lambda e: e.name):
        try:
            register: Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] = entry.load()
        except ImportError as exc:  # a provider must import without its extra; say so if not
            log.debug("cannot load commands of %s: %s", entry.name, exc)
            continue
        register(subparsers)
    return parser


def configure_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    if verbose < 2:  # paho logs every failed reconnect as an error; shared.mqtt already says it once, clearly
        logging.getLogger("paho").setLevel(logging.CRITICAL)


def missing_extra(exc: ImportError) -> MissingExtraError | None:
    """Translate an ImportError of an optional dependency into a :class:`MissingExtraError`."""
    if isinstance(exc, MissingExtraError):
        return exc
    module = (exc.name or "").split(".")[0]
    extra = EXTRA_OF_MODULE.get(module)
    return MissingExtraError(extra, module) if extra else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except ImportError as exc:
        hint = missing_extra(exc)
        if hint is None:
            raise
        print(f"maskwatch {args.command}: {hint}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"maskwatch {args.command}: {exc}", file=sys.stderr)
        return 2
    except MaskwatchError as exc:
        print(f"maskwatch {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
