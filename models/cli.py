"""Subcommands of `maskwatch` provided by the models package."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `maskwatch` parser."""
