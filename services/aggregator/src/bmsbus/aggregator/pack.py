"""One pack as the aggregator sees it: the newest sample, the meters, what was refused and why.

Pure: the caller passes `now` (the aggregator's clock, for staleness) and samples carry their own `ts`
(the source clock, for everything that integrates or times).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from bmsbus.shared.models import Sample

from .cells import CellStats, cell_stats
from .meters import Meters, Point, Reorder, time_to_go

HISTORY = 256  # committed points kept for group interpolation


def sample_point(s: Sample) -> Point:
    power = s.power
    if power is None and s.voltage is not None and s.current is not None:
        power = s.voltage * s.current
    return Point(s.ts, power, s.current, s.soc, s.capacity or s.design_capacity)


def sample_charge(s: Sample) -> float | None:
    """Remaining Ah: the BMS's own figure, else SoC × capacity."""
    if s.charge is not None:
        return s.charge
    cap = s.capacity or s.design_capacity
    if s.soc is not None and cap:
        return s.soc / 100.0 * cap
    return None


@dataclass(slots=True)
class Pack:
    id: str
    meters: Meters
    reorder: Reorder
    live: Sample | None = None  # the newest sample by source time
    last_arrival: float | None = None  # aggregator clock when the newest sample arrived
    refused: Counter[str] = field(default_factory=Counter)
    history: deque[Point] = field(default_factory=lambda: deque(maxlen=HISTORY))
    cells: CellStats | None = None

    @classmethod
    def new(cls, id: str, dt_max: float, reorder_window: float) -> Pack:
        return cls(id, Meters(dt_max), Reorder(reorder_window))

    def offer(self, s: Sample, now: float) -> str | None:
        """Take a sample; None if accepted, else why it was refused ("duplicate", "late")."""
        why = self.reorder.offer(s.boot, s.seq, sample_point(s))
        if why is not None:
            self.refused[why] += 1
            return why
        if self.live is None or s.ts >= self.live.ts:
            self.live = s
            self.cells = cell_stats(s.cell_voltages)
        self.last_arrival = now
        return None

    def release(self, upto: float | None = None) -> list[Point]:
        """Integrate the points the reorder window lets go; returns them (groups integrate them too)."""
        points = self.reorder.release(upto)
        for p in points:
            self.meters.add(p)
            self.history.append(p)
        return points

    @property
    def pending(self) -> bool:
        return bool(self.reorder.pending)

    def is_stale(self, now: float, timeout: float) -> bool:
        return self.last_arrival is None or now - self.last_arrival > timeout

    @property
    def capacity(self) -> float | None:
        s = self.live
        return (s.capacity or s.design_capacity) if s else None

    def readings(self) -> dict[str, Any]:
        """Everything BatteryState carries for a pack, but staleness."""
        out: dict[str, Any] = dict(self.meters.readings())
        out["ts"] = self.reorder.committed_ts
        s = self.live
        if s is None:
            return out
        out.update(voltage=s.voltage, current=s.current, power=sample_point(s).power, soc=s.soc, soh=s.soh,
                   charge=sample_charge(s), capacity=self.capacity, temperatures=s.temperatures,
                   mos_temperature=s.mos_temperature, cycles=s.cycles)
        if (c := self.cells) is not None:
            out.update(cell_min=c.min, cell_max=c.max, cell_delta=c.delta, cell_avg=c.avg,
                       cell_min_index=c.min_index, cell_max_index=c.max_index)
        cap = self.capacity
        out["time_to_empty"], out["time_to_full"] = time_to_go(s.current, out["charge"], cap)
        return out

    # -- persistence
    def dump(self) -> dict[str, Any]:
        return {"meters": self.meters.dump(), "reorder": self.reorder.dump(),
                "live": self.live.model_dump(exclude_none=True) if self.live else None,
                "last_arrival": self.last_arrival, "refused": dict(self.refused),
                "history": [p.dump() for p in self.history]}

    @classmethod
    def load(cls, id: str, d: dict[str, Any], dt_max: float, reorder_window: float) -> Pack:
        live = Sample.model_validate(d["live"]) if d.get("live") else None
        pack = cls(id, Meters.load(d["meters"], dt_max), Reorder.load(d["reorder"], reorder_window), live,
                   d.get("last_arrival"), Counter(d.get("refused", {})),
                   deque((Point.load(p) for p in d.get("history", [])), maxlen=HISTORY))
        pack.cells = cell_stats(live.cell_voltages) if live else None
        return pack
