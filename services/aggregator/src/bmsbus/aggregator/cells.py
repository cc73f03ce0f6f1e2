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
    """Min, max, average and their indices; None for no cells. Non-finite entries are ignored."""
    if not cells:
        return None
    good = [(v, i) for i, v in enumerate(cells) if math.isfinite(v)]
    if not good:
        return None
    lo = min(good)
    hi = max(good, key=lambda e: (e[0], -e[1]))  # the first index of the maximum
    total = math.fsum(v for v, _ in good)
    return CellStats(min=lo[0], max=hi[0], avg=total / len(good), min_index=lo[1], max_index=hi[1],
                     count=len(good), sum=total)
