"""Energy, charge and cycle meters: trapezoidal integration on the source clock.

Pure and clock-free: every function takes the timestamps it needs. Nothing here reads the time, the
disk or the bus, so every rule is table-testable.

Rules (docs/aggregator.md, "Meters"):
- Points are integrated in source-time order. `Reorder` holds them for a short window so a sample
  that arrives a little late is still put in its place; one older than the last integrated point is
  dropped and counted (integrating it would mean taking energy back out of an in/out meter).
- Each quantity integrates on its own: a sample without power still advances the charge meter, and
  the power interval simply spans from the last point that had power (if within `dt_max`).
- An interval longer than `dt_max` is not bridged: the meter restarts from the new point.
- A sign change inside an interval is split at the linear zero crossing, so in - out equals the
  trapezoid of the signed value exactly and in/out only ever grow.
- Sums are compensated (Neumaier), so a year of 1 s samples keeps ~1e-15 relative error.
- (boot, seq) identifies a sample: one seen before is never counted twice.
- The only way down is an explicit reset (`battery/<id>/meters/reset`): the totals go to 0, the last
  point and the (boot, seq) watermarks stay, so integration continues from there and a sample counted
  before the reset is still refused after it.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

WS_PER_KWH = 3_600_000.0
AS_PER_AH = 3_600.0


@dataclass(slots=True)
class Sum:
    """A Neumaier-compensated running sum."""

    total: float = 0.0
    comp: float = 0.0

    def add(self, x: float) -> None:
        t = self.total + x
        if abs(self.total) >= abs(x):
            self.comp += (self.total - t) + x
        else:
            self.comp += (x - t) + self.total
        self.total = t

    @property
    def value(self) -> float:
        return self.total + self.comp

    def dump(self) -> list[float]:
        return [self.total, self.comp]

    @classmethod
    def load(cls, data: list[float]) -> Sum:
        return cls(float(data[0]), float(data[1]))


def trapezoid_split(a: float, b: float, dt: float) -> tuple[float, float]:
    """(positive area, negative area as a positive number) of the line from a to b over dt."""
    if a >= 0 and b >= 0:
        return (a + b) * 0.5 * dt, 0.0
    if a <= 0 and b <= 0:
        return 0.0, -(a + b) * 0.5 * dt
    # One sign change: the line crosses zero at fraction a / (a - b) of the interval.
    span = a - b  # non-zero here, same sign as a
    pos = (a * a if a > 0 else b * b) / abs(span) * 0.5 * dt
    neg = (b * b if a > 0 else a * a) / abs(span) * 0.5 * dt
    return pos, neg


@dataclass(slots=True)
class Integral:
    """∫x dt, split into the part where x > 0 (`inflow`) and x < 0 (`outflow`), both growing only."""

    inflow: Sum = field(default_factory=Sum)
    outflow: Sum = field(default_factory=Sum)
    last_ts: float | None = None
    last_value: float | None = None
    intervals: int = 0
    gaps: int = 0  # intervals longer than dt_max, not bridged

    def add(self, ts: float, value: float | None, dt_max: float) -> None:
        if value is None or not math.isfinite(value):
            return  # keep the last point: the next interval spans the hole, if it is short enough
        if self.last_ts is not None and self.last_value is not None:
            dt = ts - self.last_ts
            if 0 < dt <= dt_max:
                pos, neg = trapezoid_split(self.last_value, value, dt)
                if math.isfinite(self.inflow.total + pos) and math.isfinite(self.outflow.total + neg):
                    self.inflow.add(pos)
                    self.outflow.add(neg)
                    self.intervals += 1
                else:
                    self.gaps += 1  # absurd values (an overflow): skipped like a gap, never inf
            elif dt > dt_max:
                self.gaps += 1
        self.last_ts, self.last_value = ts, value

    @property
    def net(self) -> float:
        return self.inflow.value - self.outflow.value

    def reset(self) -> None:
        """Totals to zero. The last point stays: the interval from it to the next one counts after the reset."""
        self.inflow, self.outflow = Sum(), Sum()
        self.intervals = self.gaps = 0

    def dump(self) -> dict[str, Any]:
        return {"in": self.inflow.dump(), "out": self.outflow.dump(), "ts": self.last_ts, "v": self.last_value,
                "n": self.intervals, "gaps": self.gaps}

    @classmethod
    def load(cls, d: dict[str, Any]) -> Integral:
        return cls(Sum.load(d["in"]), Sum.load(d["out"]), d.get("ts"), d.get("v"), d.get("n", 0), d.get("gaps", 0))


@dataclass(slots=True)
class SocCycles:
    """Cycles as ½·Σ|ΔSoC| / 100: one cycle is 100 % out and 100 % back in. A jump larger than
    `max_step` % (a BMS recalibrating its SoC) is not throughput and is ignored."""

    total: Sum = field(default_factory=Sum)
    last_soc: float | None = None
    max_step: float = 20.0

    def add(self, soc: float | None) -> None:
        if soc is None or not math.isfinite(soc):
            return
        if self.last_soc is not None:
            step = abs(soc - self.last_soc)
            if step <= self.max_step:
                self.total.add(step / 200.0)
        self.last_soc = soc

    @property
    def value(self) -> float:
        return self.total.value

    def reset(self) -> None:
        self.total = Sum()  # the last SoC stays: the next step counts from it

    def copy(self) -> SocCycles:
        return SocCycles(Sum(self.total.total, self.total.comp), self.last_soc, self.max_step)

    def dump(self) -> dict[str, Any]:
        return {"sum": self.total.dump(), "soc": self.last_soc}

    @classmethod
    def load(cls, d: dict[str, Any]) -> SocCycles:
        return cls(Sum.load(d["sum"]), d.get("soc"))


@dataclass(slots=True)
class Point:
    """What the meters need from one sample."""

    ts: float
    power: float | None
    current: float | None
    soc: float | None = None
    capacity: float | None = None  # Ah: what a charge throughput of one cycle is, at this point

    def dump(self) -> list[Any]:
        return [self.ts, self.power, self.current, self.soc, self.capacity]

    @classmethod
    def load(cls, d: list[Any]) -> Point:
        return cls(*d)


@dataclass(slots=True)
class Meters:
    """Energy (W -> kWh), charge (A -> Ah) and SoC cycles of one battery, fed points in time order."""

    dt_max: float
    energy: Integral = field(default_factory=Integral)
    charge: Integral = field(default_factory=Integral)
    cycles: SocCycles = field(default_factory=SocCycles)
    # Throughput cycles accumulate each interval's (in + out) / 2 / capacity at that time, rather than
    # dividing the totals by today's capacity: a BMS re-learning its capacity must not make a counter that
    # HA treats as total_increasing go down.
    throughput_cycles: Sum = field(default_factory=Sum)
    last_capacity: float | None = None

    def add(self, p: Point) -> None:
        self.energy.add(p.ts, p.power, self.dt_max)
        before = self.charge.inflow.value + self.charge.outflow.value
        self.charge.add(p.ts, p.current, self.dt_max)
        self.cycles.add(p.soc)
        if p.capacity is not None and math.isfinite(p.capacity) and p.capacity > 0:
            self.last_capacity = p.capacity
        moved = self.charge.inflow.value + self.charge.outflow.value - before
        if moved > 0 and self.last_capacity:
            self.throughput_cycles.add(moved / AS_PER_AH / 2.0 / self.last_capacity)

    def reset(self) -> None:
        self.energy.reset()
        self.charge.reset()
        self.cycles.reset()
        self.throughput_cycles = Sum()

    def readings(self) -> dict[str, float]:
        return {
            "energy_in_kwh": self.energy.inflow.value / WS_PER_KWH,
            "energy_out_kwh": self.energy.outflow.value / WS_PER_KWH,
            "energy_net_kwh": self.energy.net / WS_PER_KWH,
            "charge_in_ah": self.charge.inflow.value / AS_PER_AH,
            "charge_out_ah": self.charge.outflow.value / AS_PER_AH,
            "charge_net_ah": self.charge.net / AS_PER_AH,
            "cycles_soc": self.cycles.value,
            "cycles_throughput": self.throughput_cycles.value,
        }

    def dump(self) -> dict[str, Any]:
        return {"energy": self.energy.dump(), "charge": self.charge.dump(), "cycles": self.cycles.dump(),
                "throughput_cycles": self.throughput_cycles.dump(), "last_capacity": self.last_capacity}

    @classmethod
    def load(cls, d: dict[str, Any], dt_max: float) -> Meters:
        return cls(dt_max, Integral.load(d["energy"]), Integral.load(d["charge"]), SocCycles.load(d["cycles"]),
                   Sum.load(d.get("throughput_cycles", [0.0, 0.0])), d.get("last_capacity"))


@dataclass(slots=True)
class Reorder:
    """Holds points for `window` seconds of source time so late arrivals are put in order, and
    remembers (boot, seq) so a replayed sample is never counted twice: per boot, the highest seq
    integrated is a watermark; anything at or below it, or older than the last integrated point, is refused.

    `offer()` returns why a point was refused ("duplicate" or "late") or None if it was taken;
    `release()` hands out, in time order, the points that are now older than newest - window.
    """

    window: float
    pending: list[tuple[float, str, int, Point]] = field(default_factory=list)  # sorted by (ts, boot, seq)
    committed_ts: float | None = None  # ts of the last point handed out
    newest_ts: float | None = None
    # boot -> highest seq handed out; the few most recent boots only (a collector restart is a new boot).
    seen: dict[str, int] = field(default_factory=dict)
    max_pending: int = 1000
    max_boots: int = 8
    # Recently integrated (boot, seq), only to tell a duplicate from a late sample in the counters.
    recent: deque[tuple[str, int]] = field(default_factory=lambda: deque(maxlen=128))
    recent_set: set[tuple[str, int]] = field(default_factory=set)

    def offer(self, boot: str, seq: int, point: Point) -> str | None:
        key = (boot, seq)
        if key in self.recent_set or any(b == boot and s == seq for _, b, s, _ in self.pending):
            return "duplicate"
        last = self.seen.get(boot)
        if (last is not None and seq <= last) or (self.committed_ts is not None and point.ts < self.committed_ts):
            return "late"  # (or a duplicate of something integrated long ago: refused all the same)
        bisect.insort(self.pending, (point.ts, boot, seq, point), key=lambda e: (e[0], e[1], e[2]))
        if self.newest_ts is None or point.ts > self.newest_ts:
            self.newest_ts = point.ts
        return None

    def release(self, upto: float | None = None) -> list[Point]:
        """Points older than newest - window (or than `upto`, if given: a flush), in time order."""
        if not self.pending:
            return []
        limit = upto if upto is not None else (self.newest_ts or 0.0) - self.window
        n = 0
        while n < len(self.pending) and (self.pending[n][0] <= limit or len(self.pending) - n > self.max_pending):
            n += 1
        out, self.pending = self.pending[:n], self.pending[n:]
        for ts, boot, seq, _ in out:
            self.committed_ts = ts
            if len(self.recent) == self.recent.maxlen:
                self.recent_set.discard(self.recent[0])
            self.recent.append((boot, seq))
            self.recent_set.add((boot, seq))
            if seq > self.seen.get(boot, -1):
                self.seen.pop(boot, None)  # re-insert: the dict keeps the most recently used boots last
                self.seen[boot] = seq
        while len(self.seen) > self.max_boots:
            del self.seen[next(iter(self.seen))]
        return [p for *_, p in out]

    def dump(self) -> dict[str, Any]:
        return {"pending": [[ts, b, s, p.dump()] for ts, b, s, p in self.pending], "committed_ts": self.committed_ts,
                "newest_ts": self.newest_ts, "seen": self.seen}

    @classmethod
    def load(cls, d: dict[str, Any], window: float) -> Reorder:
        return cls(window, [(ts, b, s, Point.load(p)) for ts, b, s, p in d["pending"]], d.get("committed_ts"),
                   d.get("newest_ts"), dict(d.get("seen", {})))


def time_to_go(current: float | None, charge: float | None, capacity: float | None,
               min_current: float = 0.05) -> tuple[float | None, float | None]:
    """(seconds to empty, seconds to full) at the present current; None where it does not apply."""
    if current is None or charge is None or abs(current) < min_current:
        return None, None
    if current < 0:
        return max(0.0, charge / -current * 3600.0), None
    if capacity is None or capacity <= 0:
        return None, None
    return None, max(0.0, (capacity - charge) / current * 3600.0)
