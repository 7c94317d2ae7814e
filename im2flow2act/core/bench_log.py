"""One place for benchmark bookkeeping: every ``scripts/bench_*.py`` appends a JSON row the same way."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def append_row(path: str | Path, bench: str, **figures: Any) -> Path:
    """Append ``{"bench", "time", "machine", "cpus", **figures}`` as one JSON line to ``path``."""
    row = {
        "bench": bench,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        **figures,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(f"JSON row appended to {path}")
    return path
