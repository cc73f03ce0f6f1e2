"""Battery groups: several packs seen as one battery, in parallel or in series.

Live values (what the group shows now) come from the members' newest samples; a member silent longer
than `timeout` (aggregator clock) is left out of every sum and named in `stale_members`, and the group
is `degraded` (all members silent: `stale`). Nothing is extrapolated from a silent member.

Group meters integrate the group's own time series, not the sum of member meters: in a parallel bank
one pack can charge another, and that circulating current is neither energy in nor energy out of the
group. The series is built on the source clock: at every time a member committed a point, each member's
value is interpolated linearly between its own committed points, and the group point is their combination.
A time is evaluated only once every member has a point at or after it (so nothing is extrapolated),
or is absent: its newest point is more than `timeout` older than the newest point of any member (source
clock), and it is then left out after its last point. A member
with a gap longer than dt_max around that time has no value there, so the group has none either, and
the group interval spans the hole like any missing value (or is not bridged, if longer than dt_max).

Group cycles (`cycles_soc`) weigh each member's SoC cycles by its share of the group's capacity: every
step a member's counter takes (counted by the group itself from the points the member commits, the same
points in the same order as the member's own counter) adds step × capacity / group capacity at that time.
Accumulating steps, rather than re-weighting totals, keeps the counter growing when a member goes stale or
a BMS re-learns its capacity. Resetting the group's meters does not touch the packs and resetting a pack
does not touch its groups.

Pure: no clock, no I/O.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .meters import Meters, Point, SocCycles, Sum, time_to_go
from .pack import Pack, sample_charge, sample_point

MAX_PENDING_TIMES = 100_000


def interpolate(history: Sequence[Point], t: float, dt_max: float) -> Point | None:
    """The member's value at t, linear between its committed points; None if t is outside them."""
    if not history or t < history[0].ts or t > history[-1].ts:
        return None
    # Usually t is among the newest points: search backwards.
    i = len(history) - 1
    while i > 0 and history[i - 1].ts >= t:
        i -= 1
    b = history[i]
    if b.ts == t:
        return b
    a = history[i - 1]
    dt = b.ts - a.ts
    if dt > dt_max or dt <= 0:
        return Point(t, None, None, None)
    f = (t - a.ts) / dt

    def lerp(x: float | None, y: float | None) -> float | None:
        return None if x is None or y is None else x + (y - x) * f

    return Point(t, lerp(a.power, b.power), lerp(a.current, b.current), lerp(a.soc, b.soc), b.capacity or a.capacity)


def _sum(xs: Iterable[float | None]) -> float | None:
    vals = list(xs)
    if not vals or any(v is None for v in vals):
        return None  # one missing member makes the sum unknown, never wrong
    return sum(vals)  # type: ignore[arg-type]


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [v for v in xs if v is not None]
    return sum(vals) / len(vals) if vals else None


def combine_points(topology: str, t: float, points: Sequence[Point]) -> Point:
    if topology == "series":
        # One current flows through every member; powers add; the weakest member's Ah is the string's.
        return Point(t, _sum(p.power for p in points), _mean(p.current for p in points), None,
                     _min(p.capacity for p in points))
    return Point(t, _sum(p.power for p in points), _sum(p.current for p in points), None,
                 _sum(p.capacity for p in points))


@dataclass(slots=True)
class Group:
    id: str
    name: str
    members: list[str]
    topology: str  # "parallel" | "series"
    meters: Meters
    timeout: float
    evaluated_ts: float | None = None
    times: list[float] = field(default_factory=list)  # sorted, unique, > evaluated_ts
    first_ts: float | None = None  # the first time any member gave us: a member never heard of is awaited
                                   # until `timeout` after it, then left out
    member_cycles: dict[str, SocCycles] = field(default_factory=dict)  # SoC cycles of each member, as counted here
    cycles_soc: Sum = field(default_factory=Sum)  # capacity-weighted steps of the members' counters

    @classmethod
    def new(cls, id: str, name: str, members: list[str], topology: str, dt_max: float, timeout: float) -> Group:
        return cls(id, name, list(members), topology, Meters(dt_max), timeout)

    # -- meters
    def committed(self, points: Iterable[Point], packs: Mapping[str, Pack], member: str | None = None) -> None:
        """`member` committed these points (already in its own meters): evaluate every group time now ready."""
        points = list(points)
        if member is not None and member in packs:
            cycles = self.member_cycles.get(member)
            if cycles is None:
                # First points of this member here (or a state from before groups counted cycles): take over
                # the member's own count, which already includes these points.
                self.member_cycles[member] = packs[member].meters.cycles.copy()
            else:
                share = self._capacity_share(member, packs)
                for p in points:
                    before = cycles.value
                    cycles.add(p.soc)
                    if share is not None and cycles.value > before:
                        self.cycles_soc.add((cycles.value - before) * share)
        for p in points:
            if self.first_ts is None or p.ts < self.first_ts:
                self.first_ts = p.ts
            if self.evaluated_ts is not None and p.ts <= self.evaluated_ts:
                continue
            i = bisect.bisect_left(self.times, p.ts)
            if i == len(self.times) or self.times[i] != p.ts:
                self.times.insert(i, p.ts)
        if len(self.times) > MAX_PENDING_TIMES:
            del self.times[: len(self.times) - MAX_PENDING_TIMES]
        self._advance(packs)

    def _capacity_share(self, member: str, packs: Mapping[str, Pack]) -> float | None:
        """member capacity / sum of the members' capacities (last known, stale or not); None if unknown."""
        caps = {m: packs[m].capacity for m in self.members if m in packs}
        own = caps.get(member)
        total = sum(c for c in caps.values() if c)
        return own / total if own and total else None

    def _advance(self, packs: Mapping[str, Pack]) -> None:
        lasts: dict[str, float | None] = {}
        for m in self.members:
            pack = packs.get(m)
            lasts[m] = pack.history[-1].ts if pack is not None and pack.history else None
        newest = max((t for t in lasts.values() if t is not None), default=None)
        if newest is None:
            return
        # A member whose newest point is more than `timeout` behind the newest of the group (or who has
        # not been heard of `timeout` after the group's first point) is absent: the group does not wait
        # for it beyond its last point.
        absent = {m for m, last in lasts.items()
                  if (last is None and self.first_ts is not None and newest - self.first_ts > self.timeout)
                  or (last is not None and newest - last > self.timeout)}
        done = 0
        for t in self.times:
            values: list[Point] = []
            ready = True
            for m in self.members:
                last = lasts[m]
                if last is not None and last >= t:
                    v = interpolate(packs[m].history, t, self.meters.dt_max)
                    values.append(v if v is not None else Point(t, None, None, None))
                elif m in absent:
                    continue  # silent for too long: left out past its last point
                else:
                    ready = False  # wait for this member to reach t
                    break
            if not ready:
                break
            done += 1
            if values:
                self.meters.add(combine_points(self.topology, t, values))
            self.evaluated_ts = t
        del self.times[:done]

    # -- live values
    def readings(self, packs: Mapping[str, Pack], now: float,
                 is_stale: Callable[[Pack], bool]) -> dict[str, Any]:
        live: list[Pack] = []
        stale: list[str] = []
        for m in self.members:
            p = packs.get(m)
            if p is None or p.live is None or is_stale(p):
                stale.append(m)
            else:
                live.append(p)
        out: dict[str, Any] = dict(self.meters.readings())
        out["cycles_soc"] = self.cycles_soc.value  # a group cycle is every pack cycling once
        out.update(ts=self.evaluated_ts, members=list(self.members), stale_members=stale,
                   degraded=bool(stale), stale=not live)
        if not live:
            return out
        samples = [p.live for p in live]
        assert all(s is not None for s in samples)
        caps = [p.capacity for p in live]
        charges = [sample_charge(s) for s in samples]  # type: ignore[arg-type]
        powers = [sample_point(s).power for s in samples]  # type: ignore[arg-type]
        if self.topology == "series":
            out.update(voltage=_sum(s.voltage for s in samples), current=_mean(s.current for s in samples),  # type: ignore[union-attr]
                       power=_sum(powers), soc=_min(s.soc for s in samples), soh=_min(s.soh for s in samples),  # type: ignore[union-attr]
                       charge=_min(charges), capacity=_min(caps))
        else:
            out.update(voltage=_mean(s.voltage for s in samples), current=_sum(s.current for s in samples),  # type: ignore[union-attr]
                       power=_sum(powers), charge=_sum(charges), capacity=_sum(caps),
                       soc=_weighted([s.soc for s in samples], caps),  # type: ignore[union-attr]
                       soh=_weighted([s.soh for s in samples], caps))  # type: ignore[union-attr]
        # Cells across members, naming the pack that holds the extreme.
        cells = [(p.id, p.cells) for p in live if p.cells is not None]
        if cells:
            lo = min(cells, key=lambda c: c[1].min)  # type: ignore[union-attr]
            hi = max(cells, key=lambda c: c[1].max)  # type: ignore[union-attr]
            n = sum(c.count for _, c in cells)  # type: ignore[union-attr]
            out.update(cell_min=lo[1].min, cell_min_index=lo[1].min_index, cell_min_member=lo[0],  # type: ignore[union-attr]
                       cell_max=hi[1].max, cell_max_index=hi[1].max_index, cell_max_member=hi[0],  # type: ignore[union-attr]
                       cell_delta=hi[1].max - lo[1].min,  # type: ignore[union-attr]
                       cell_avg=sum(c.sum for _, c in cells) / n)  # type: ignore[union-attr]
        temps = {p.id: list(p.live.temperatures) for p in live if p.live and p.live.temperatures}
        if temps:
            out["member_temperatures"] = temps
            out["temperatures"] = [t for ts in temps.values() for t in ts]
        mos = [p.live.mos_temperature for p in live if p.live and p.live.mos_temperature is not None]
        if mos:
            out["mos_temperature"] = max(mos)
        cap = out.get("capacity")
        out["time_to_empty"], out["time_to_full"] = time_to_go(out.get("current"), out.get("charge"), cap)
        return out

    def reset_meters(self, packs: Mapping[str, Pack]) -> None:
        """Energy, charge and cycles of the group to zero (the members' own meters are untouched)."""
        self.meters.reset()
        self.cycles_soc = Sum()
        for m in self.members:
            if m in packs:
                cycles = self.member_cycles.setdefault(m, packs[m].meters.cycles.copy())
                cycles.reset()

    # -- persistence
    def dump(self) -> dict[str, Any]:
        return {"meters": self.meters.dump(), "evaluated_ts": self.evaluated_ts, "times": self.times,
                "first_ts": self.first_ts, "member_cycles": {m: c.dump() for m, c in self.member_cycles.items()},
                "cycles_soc": self.cycles_soc.dump()}

    def restore(self, d: dict[str, Any]) -> None:
        self.meters = Meters.load(d["meters"], self.meters.dt_max)
        self.evaluated_ts = d.get("evaluated_ts")
        self.times = list(d.get("times", []))
        self.first_ts = d.get("first_ts")
        self.member_cycles = {m: SocCycles.load(c) for m, c in d.get("member_cycles", {}).items()
                              if m in self.members}
        self.cycles_soc = Sum.load(d.get("cycles_soc", [0.0, 0.0]))


def _min(xs: Iterable[float | None]) -> float | None:
    vals = [v for v in xs if v is not None]
    return min(vals) if vals else None


def _weighted(values: Sequence[float | None], weights: Sequence[float | None]) -> float | None:
    """Capacity-weighted mean; plain mean if no member reports a capacity."""
    pairs = [(v, w) for v, w in zip(values, weights, strict=True) if v is not None and w]
    if pairs:
        return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)
    return _mean(values)
