"""Compare two flow-dataset stores episode by episode: names, every array, every attribute."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

TIMING_ATTRS = {"seconds", "wall_seconds", "created"}


def store_differences(a: Path, b: Path) -> list[str]:
    """What differs between the stores ``a`` and ``b`` (empty when they hold the same data)."""
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    names_a, names_b = sorted(ga.group_keys()), sorted(gb.group_keys())
    if names_a != names_b:
        return [f"episodes {names_a} vs {names_b}"]
    problems = []
    for name in names_a:
        ea, eb = ga[name], gb[name]
        arrays_a, arrays_b = sorted(ea.array_keys()), sorted(eb.array_keys())
        if arrays_a != arrays_b:
            problems.append(f"{name}: arrays {arrays_a} vs {arrays_b}")
            continue
        for key in arrays_a:
            x, y = np.asarray(ea[key][...]), np.asarray(eb[key][...])
            same = x.shape == y.shape and x.dtype == y.dtype
            if not same or not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                problems.append(f"{name}/{key} differs")
        attrs_a = {k: v for k, v in ea.attrs.asdict().items() if k not in TIMING_ATTRS}
        attrs_b = {k: v for k, v in eb.attrs.asdict().items() if k not in TIMING_ATTRS}
        if attrs_a != attrs_b:
            keys = sorted(k for k in attrs_a.keys() | attrs_b.keys() if attrs_a.get(k) != attrs_b.get(k))
            problems.append(f"{name}: attrs {keys} differ")
    return problems
