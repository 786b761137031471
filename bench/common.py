"""What every benchmark script shares: writing ``bench/results/<name>.json`` in the report's format."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import RESULTS, machine


def write_result(
    name: str, title: str, figures: dict[str, Any], baseline: dict[str, Any], ratios: dict[str, Any], notes: str
) -> Path:
    """Write one benchmark's result (with the date, the machine and its load average) and return the file."""
    result = {
        "name": name,
        "title": title,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{machine()}, load average {os.getloadavg()[0]:.1f} at the end",
        "figures": figures,
        "baseline": baseline,
        "ratios": ratios,
        "notes": notes,
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def percentiles(samples: list[float]) -> dict[str, float]:
    """p50, p90, p99 and max of ``samples`` (milliseconds), rounded to 0.01."""
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)  # noqa: E731
    return {"p50_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 2)}
