"""Write the JSON Schema of every public message to ``docs/schemas/``: ``python -m shared.schemas [DIR]``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared.messages import export_schemas


def write_schemas(folder: Path) -> list[Path]:
    """Write one ``<name>.json`` per message into ``folder``; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, schema in export_schemas().items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "schemas"
    for written in write_schemas(target):
        print(written)
