"""Cell statistics of one pack. Indices are 0-based, as on the bus."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CellStats:
    min: float
    max: float
    avg: float
    min_index: int
    max_index: int
    count: int
    sum: float

    @property
    def delta(self) -> float:
        return self.max - self.min


def cell_stats(cells: Sequence[float] | None) -> CellStats | None:
    """Min, max, average and their (first) indices; None for no cells. Non-finite entries are ignored
    (the bus never carries them, but a list built elsewhere might)."""
    if not cells:
        return None
    total = math.fsum(cells)
    if not math.isfinite(total):
        good = [v for v in cells if math.isfinite(v)]
        if not good:
            return None
        lo, hi = min(good), max(good)
        total = math.fsum(good)
        n = len(good)
    else:
        lo, hi = min(cells), max(cells)
        n = len(cells)
    return CellStats(min=lo, max=hi, avg=total / n, min_index=list(cells).index(lo), max_index=list(cells).index(hi),
                     count=n, sum=total)
