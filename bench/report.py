"""Gather ``bench/results/*.json`` into ``docs/benchmarks.md``.

Each result file is written by one benchmark script::

    {"name": "hub_ingest", "title": "...", "date": "...", "machine": "...",
     "figures": {...}, "baseline": {...}, "ratios": {...}, "notes": "..."}

``figures`` are Maskwatch's numbers, ``baseline`` the numbers of the baseline run side by side in the same run,
``ratios`` how they compare (> 1 means Maskwatch is better unless the key says otherwise).
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
REPORT = HERE.parent / "docs" / "benchmarks.md"


def machine() -> str:
    """A one-line description of this machine."""
    try:
        import os

        cores = os.cpu_count()
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        memory = f"{int(mem) / 1024 / 1024:.0f} GiB"
    except (OSError, IndexError, ValueError):
        cores, memory = None, "?"
    return (
        f"{platform.machine()}, {cores} cores, {memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _table(title: str, values: dict[str, Any]) -> list[str]:
    if not values:
        return []
    lines = [f"| {title} | value |", "| --- | --- |"]
    lines += [f"| {key} | {_fmt(value)} |" for key, value in values.items()]
    return [*lines, ""]


def render(results: list[dict[str, Any]]) -> str:
    """The Markdown report for these results."""
    out = [
        "# Benchmarks",
        "",
        f"Written by `bench/run` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        "Each figure is measured side by side with its baseline in the same run; ratios compare the two.",
        "",
    ]
    for result in sorted(results, key=lambda r: r.get("name", "")):
        out += [
            f"## {result.get('title') or result.get('name')}",
            "",
            f"`bench/{result.get('name')}.py`, run {result.get('date', '?')} on {result.get('machine', '?')}.",
            "",
        ]
        if result.get("notes"):
            out += [str(result["notes"]), ""]
        out += _table("figure", result.get("figures", {}))
        out += _table("baseline", result.get("baseline", {}))
        out += _table("ratio", result.get("ratios", {}))
    return "\n".join(out) + "\n"


def main() -> int:
    results = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            results.append(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            print(f"skipping {path}: {exc}", file=sys.stderr)
    REPORT.write_text(render(results))
    print(f"wrote {REPORT} from {len(results)} result files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
