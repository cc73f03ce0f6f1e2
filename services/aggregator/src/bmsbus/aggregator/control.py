"""Charge control: charge voltage limit (CVL), charge and discharge current limits (CCL, DCL), mode.

Reimplemented from the behaviour described in docs/charge-control.md (itself a prose description of the
dbus-serialbattery control set); no code was copied. Every output carries the reason that set it.

Pure and clock-free. Timers that belong to the battery (absorption, ramps, holds) run on the source
clock `ts` of the samples; loss of telemetry is judged on the aggregator clock `now`, because a silent
source has no clock to ask.

The `charge_control` setting may hold a pack in bulk or in float (`hold`): the state machine then stands
still in that state, while every protection (cell-overvoltage controller, current curves, anti-flap,
telemetry loss) keeps working.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bmsbus.shared.config import ChargeControlConfig
from bmsbus.shared.models import Sample

# --- curves --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Curve:
    """A piecewise function given by points, clamped at both ends. Linear: interpolate between points;
    step: take the lower of the two bracketing values (the conservative side)."""

    xs: tuple[float, ...]
    ys: tuple[float, ...]
    step: bool = False

    @classmethod
    def of(cls, points: Sequence[tuple[float, float]], mode: str = "linear") -> Curve:
        pts = sorted((float(x), float(y)) for x, y in points)
        if not pts:
            raise ValueError("a curve needs at least one point")
        return cls(tuple(x for x, _ in pts), tuple(y for _, y in pts), mode == "step")

    def __call__(self, x: float) -> float:
        xs, ys = self.xs, self.ys
        if x <= xs[0]:
            return ys[0]
        if x >= xs[-1]:
            return ys[-1]
        i = bisect.bisect_right(xs, x)
        a, b = i - 1, i
        if x == xs[a]:
            return ys[a]
        if self.step:
            return min(ys[a], ys[b])
        f = (x - xs[a]) / (xs[b] - xs[a])
        return ys[a] + (ys[b] - ys[a]) * f


@dataclass(frozen=True, slots=True)
class Limit:
    value: float
    reason: str


def lowest(candidates: Sequence[Limit]) -> Limit:
    """The smallest candidate; on a tie the first listed (the more fundamental reason) wins."""
    best = candidates[0]
    for c in candidates[1:]:
        if c.value < best.value - 1e-12:
            best = c
    return best


@dataclass(frozen=True, slots=True)
class Curves:
    charge_cell: Curve | None
    discharge_cell: Curve | None
    charge_temp: Curve | None
    discharge_temp: Curve | None
    mos_temp: Curve | None
    charge_soc: Curve | None
    discharge_soc: Curve | None

    @classmethod
    def of(cls, cfg: ChargeControlConfig) -> Curves:
        def c(points: Sequence[tuple[float, float]] | None) -> Curve | None:
            return Curve.of(points, cfg.curve_mode) if points else None

        return cls(c(cfg.charge_cell_voltage_curve), c(cfg.discharge_cell_voltage_curve),
                   c(cfg.charge_temperature_curve), c(cfg.discharge_temperature_curve), c(cfg.mos_temperature_curve),
                   c(cfg.charge_soc_curve), c(cfg.discharge_soc_curve))


# --- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """What charge control needs from a sample."""

    ts: float
    cells: tuple[float, ...] = ()
    voltage: float | None = None
    soc: float | None = None
    temperatures: tuple[float, ...] = ()
    mos_temperature: float | None = None
    charge_switch: bool | None = None
    discharge_switch: bool | None = None
    balancing: bool = False

    @classmethod
    def of(cls, s: Sample) -> Reading:
        sw = s.switches or {}
        return cls(ts=s.ts, cells=tuple(s.cell_voltages or ()), voltage=s.voltage, soc=s.soc,
                   temperatures=tuple(s.temperatures or ()), mos_temperature=s.mos_temperature,
                   charge_switch=sw.get("charge"), discharge_switch=sw.get("discharge"),
                   balancing=bool(s.balancing) or bool(s.balance_current and abs(s.balance_current) > 0.001))


def _cell(i: int, v: float) -> str:
    return f"cell {i + 1} {v:.3f} V"  # people count cells from 1


# --- charge voltage ------------------------------------------------------------------------------


@dataclass(slots=True)
class ChargeVoltage:
    """Bulk -> absorption -> float -> re-bulk, the cell-overvoltage controllers and the asymmetric
    hold-then-ramp recovery of a reduced CVL."""

    allow_max: bool = True  # bulk/absorption (True) or float (False)
    absorption_since: float | None = None
    applied: float | None = None  # the CVL in force, before voltage_drop
    i_state: float | None = None  # I-controller integrator
    raise_since: float | None = None
    last_ts: float | None = None
    last_full_charge: float | None = None
    last_soc_reset: float | None = None
    soc_too_low_to_float: bool = False
    ovp: bool = False

    def soc_reset_due(self, ts: float, cfg: ChargeControlConfig) -> bool:
        if cfg.soc_reset_after_days is None:
            return False
        return self.last_soc_reset is None or ts - self.last_soc_reset > cfg.soc_reset_after_days * 86400.0

    def evaluate(self, r: Reading, cfg: ChargeControlConfig, hold: str | None = None) -> tuple[Limit | None, str]:
        """(CVL, mode) for this reading. `hold` "bulk" or "float" keeps the machine in that state."""
        if not r.cells:
            self.last_ts = r.ts
            return None, "Unknown (no cell voltages)"
        n = len(r.cells)
        vsum = math.fsum(r.cells)
        vmax = max(r.cells)
        diff = vmax - min(r.cells)
        dt = max(0.0, r.ts - self.last_ts) if self.last_ts is not None else 0.0
        self.last_ts = r.ts

        # A held state never completes a SoC reset (that needs float to follow absorption): it waits for auto.
        reset_due = hold is None and self.soc_reset_due(r.ts, cfg)
        cell_limit = cfg.soc_reset_cell_voltage if reset_due else cfg.max_cell_voltage
        max_batt = cell_limit * n
        if hold is not None:
            was_max = self.allow_max
            self.allow_max = hold == "bulk"
            self.absorption_since = None  # no timer runs while held: float comes only from auto
            if was_max and not self.allow_max:
                dt = 0.0  # the float ramp starts now
            elif self.allow_max and not was_max:
                self.applied, self.raise_since, self.i_state = None, None, None  # bulk: full voltage at once
        elif cfg.state_machine:
            was_max = self.allow_max
            self._step(r, cfg, reset_due, vsum, diff, max_batt)
            if was_max and not self.allow_max:
                dt = 0.0  # the float ramp starts now, not at the previous reading
            reset_due = self.soc_reset_due(r.ts, cfg)  # entering float ends a due reset
            cell_limit = cfg.soc_reset_cell_voltage if reset_due else cfg.max_cell_voltage
            max_batt = cell_limit * n

        if (hold is None and not cfg.state_machine) or self.allow_max:
            target, ovp_reason = self._controller(r.cells, cell_limit, vsum, vmax, cfg.min_cell_voltage * n, max_batt,
                                                  cfg)
            self._apply(target, r.ts, dt, cfg)
            assert self.applied is not None
            self.ovp = ovp_reason is not None
            mode = "Absorption" if self.absorption_since is not None else "Bulk"
            if hold is not None:
                mode += " (held)"
            if ovp_reason is not None:
                mode += " (Cell OVP)"
                reason = ovp_reason
            elif self.applied < target - 1e-9:
                mode += " (Cell OVP*)"
                reason = f"recovering after cell overvoltage, towards {target:.3f} V"
            else:
                what = "SoC reset" if reset_due else ("absorption" if self.absorption_since is not None else "bulk")
                if hold is not None:
                    what += " held by the charge_control setting"
                reason = f"{what}: {n} × {cell_limit:.3f} V"
        else:
            float_v = cfg.float_cell_voltage * n
            if self.applied is None or self.applied <= float_v:
                self.applied = float_v
            else:
                self.applied = max(float_v, self.applied - cfg.float_ramp_rate * dt)
                if self.applied - float_v < 1e-9:
                    self.applied = float_v  # arrived (not a rounding error above it)
            self.ovp = False
            held = " held by the charge_control setting" if hold is not None else ""
            if self.applied > float_v:
                mode, reason = "Float Transition", \
                    f"float transition{held}: ramping to {n} × {cfg.float_cell_voltage:.3f} V"
            else:
                mode, reason = "Float", f"float{held}: {n} × {cfg.float_cell_voltage:.3f} V"
            if hold is not None:
                mode += " (held)"
        if reset_due:
            mode += " & SoC Reset"
        if r.balancing:
            mode += " + Balancing"
        mode += " │ Step Mode" if cfg.curve_mode == "step" else " │ Linear Mode"
        return Limit(self.applied + cfg.voltage_drop, reason), mode

    def _step(self, r: Reading, cfg: ChargeControlConfig, reset_due: bool, vsum: float, diff: float,
              max_batt: float) -> None:
        if self.allow_max:
            if self.absorption_since is None:
                if vsum >= max_batt and diff <= cfg.float_cell_diff:
                    self.absorption_since = r.ts
            elif diff > cfg.float_cell_diff + cfg.float_cell_deviation:
                self.absorption_since = r.ts  # cells drifted apart: absorb longer
            elif vsum < max_batt - cfg.absorption_tolerance:
                self.absorption_since = None  # fell out of absorption
            elif r.ts - self.absorption_since >= cfg.float_after:
                self.allow_max = False
                self.absorption_since = None
                self.soc_too_low_to_float = bool(cfg.bulk_soc is not None and r.soc is not None
                                                 and r.soc <= cfg.bulk_soc)
                self.last_full_charge = r.ts
                if reset_due:
                    self.last_soc_reset = r.ts
        elif self.absorption_since is None:
            if ((cfg.bulk_soc is not None and r.soc is not None and r.soc < cfg.bulk_soc)
                    or (cfg.bulk_cell_diff is not None and diff >= cfg.bulk_cell_diff) or reset_due):
                self.allow_max = True
                self.applied = None  # back to bulk: the full voltage at once, not a slow recovery
                self.raise_since = None
                self.i_state = None

    def _controller(self, cells: Sequence[float], limit: float, vsum: float, vmax: float, min_batt: float,
                    max_batt: float, cfg: ChargeControlConfig) -> tuple[float, str | None]:
        """(target CVL, reason if a cell overvoltage lowered it)."""
        def clamp(v: float) -> float:
            return min(max_batt, max(min_batt, v))

        over = [(i, v) for i, v in enumerate(cells) if v > limit]
        worst = max(over, key=lambda e: e[1]) if over else None
        match cfg.cvl_controller:
            case "penalty":
                if worst is None:
                    return max_batt, None
                penalty = math.fsum(v - limit for _, v in over)
                return clamp(vsum - penalty), (f"cell overvoltage: {_cell(*worst)} > {limit:.3f} V, "
                                               f"penalty {penalty:.3f} V over {len(over)} cell(s)")
            case "i":
                state = self.i_state if self.i_state is not None else max_batt
                state = clamp(state - (vmax - limit - cfg.float_cell_diff) * cfg.cvl_i_factor)
                self.i_state = state
                if state < max_batt - 1e-9:
                    i = cells.index(vmax)
                    return state, f"cell overvoltage (I-controller): {_cell(i, vmax)}, regulating to " \
                                  f"{limit + cfg.float_cell_diff:.3f} V"
                return state, None
            case "clipped":
                if worst is None:
                    return max_batt, None
                return clamp(math.fsum(min(v, limit) for v in cells) + 0.010), \
                    f"cell overvoltage (clipped sum): {_cell(*worst)} > {limit:.3f} V"
            case _:
                return max_batt, None

    def _apply(self, target: float, ts: float, dt: float, cfg: ChargeControlConfig) -> None:
        """Lower at once; higher only after a hold, then at a limited rate."""
        if self.applied is None or target <= self.applied:
            self.applied = target
            self.raise_since = None
            return
        if self.raise_since is None:
            self.raise_since = ts
        held = ts - self.raise_since - cfg.cvl_recovery_hold
        if held < 0:
            return
        if cfg.cvl_recovery_rate <= 0:
            self.applied = target
        else:
            self.applied = min(target, self.applied + cfg.cvl_recovery_rate * min(dt, held))
        if self.applied >= target:
            self.raise_since = None


# --- current limits ------------------------------------------------------------------------------


@dataclass(slots=True)
class CurrentLimit:
    """Applies a current limit target with the anti-flap rules: reductions at once; a rise only every
    `recalculate_every` s unless it is large; out of 0 only above the recovery threshold, after a hold,
    then ramped from the end of the hold."""

    applied: float | None = None
    reason: str = ""
    last_change: float | None = None
    hold_since: float | None = None
    recovering: bool = False
    last_ts: float | None = None

    def update(self, target: Limit, ts: float, maximum: float, cfg: ChargeControlConfig) -> Limit:
        dt = max(0.0, ts - self.last_ts) if self.last_ts is not None else 0.0
        self.last_ts = ts
        if self.applied is None or target.value <= self.applied:
            if self.applied is None or target.value < self.applied:
                self.last_change = ts
            self.applied, self.reason = target.value, target.reason
            self.hold_since, self.recovering = None, False
            return Limit(self.applied, self.reason)
        # Rising.
        if self.applied <= 0.0 and not self.recovering:
            if target.value <= cfg.recovery_threshold * maximum:
                return Limit(self.applied, self.reason)  # not far enough above 0 to be trusted
            if self.hold_since is None:
                self.hold_since = ts
            if ts - self.hold_since < cfg.current_recovery_hold:
                return Limit(self.applied, f"{self.reason} (holding {cfg.current_recovery_hold:.0f} s before recovery)")
            self.recovering = True
        if not self.recovering:
            small = target.value - self.applied < cfg.recalculate_on_change * self.applied
            recent = self.last_change is not None and ts - self.last_change < cfg.recalculate_every
            if small and recent:
                return Limit(self.applied, self.reason)
            self.applied, self.reason, self.last_change = target.value, target.reason, ts
            return Limit(self.applied, self.reason)
        # Recovering out of 0: ramp, timed from the end of the hold.
        ramp_start = (self.hold_since or ts) + cfg.current_recovery_hold
        step = cfg.current_recovery_rate * min(dt, max(0.0, ts - ramp_start)) if cfg.current_recovery_rate > 0 \
            else math.inf
        self.applied = min(target.value, self.applied + step)
        self.last_change = ts
        if self.applied >= target.value:
            self.reason, self.recovering, self.hold_since = target.reason, False, None
            return Limit(self.applied, self.reason)
        return Limit(self.applied, f"recovering at {cfg.current_recovery_rate:g} A/s towards {target.value:.1f} A "
                                   f"({target.reason})")

    def block(self, reason: str, ts: float) -> Limit:
        self.applied, self.reason, self.last_change = 0.0, reason, ts
        self.hold_since, self.recovering = None, False
        return Limit(0.0, reason)


def _cell_reason(i: int, v: float) -> str:
    return f"cell voltage: {_cell(i, v)}"


def _temp_reason(which: str, t: float) -> str:
    return f"temperature: {which} {t:.1f} °C"


def _mos_reason(t: float) -> str:
    return f"MOSFET temperature {t:.1f} °C"


def _soc_reason(soc: float) -> str:
    return f"SoC {soc:.1f} %"


class _Lowest:
    """The lowest of candidate limits, formatting only the winner's reason (this runs for every sample)."""

    __slots__ = ("value", "why", "args")

    def __init__(self, value: float, reason: str) -> None:
        self.value, self.why, self.args = value, reason, ()

    def offer(self, value: float, why: Any, *args: Any) -> None:
        if value < self.value - 1e-12:  # on a tie the earlier, more fundamental reason stays
            self.value, self.why, self.args = value, why, args

    def limit(self) -> Limit:
        return Limit(self.value, self.why(*self.args) if self.args else self.why)


CONFIGURED_MAXIMUM = "configured maximum"


def current_targets(r: Reading, cfg: ChargeControlConfig, curves: Curves,
                    max_reasons: tuple[str, str] = (CONFIGURED_MAXIMUM, CONFIGURED_MAXIMUM),
                    ) -> tuple[Limit, Limit, Limit]:
    """(CCL, DCL, CCL without the BMS-switch candidate) before anti-flap, each the lowest candidate.
    `max_reasons` name where the charge and discharge maxima come from (config or a runtime setting)."""
    cmax, dmax = cfg.max_charge_current, cfg.max_discharge_current
    charge = _Lowest(cmax, max_reasons[0])
    discharge = _Lowest(dmax, max_reasons[1])
    cells = r.cells
    if cells:
        vhi, vlo = max(cells), min(cells)
        if curves.charge_cell:
            charge.offer(cmax * curves.charge_cell(vhi), _cell_reason, cells.index(vhi), vhi)
        if curves.discharge_cell:
            discharge.offer(dmax * curves.discharge_cell(vlo), _cell_reason, cells.index(vlo), vlo)
    if r.temperatures:
        for t, which in ((min(r.temperatures), "lowest"), (max(r.temperatures), "highest")):
            if curves.charge_temp:
                charge.offer(cmax * curves.charge_temp(t), _temp_reason, which, t)
            if curves.discharge_temp:
                discharge.offer(dmax * curves.discharge_temp(t), _temp_reason, which, t)
    if r.mos_temperature is not None and curves.mos_temp:
        f = curves.mos_temp(r.mos_temperature)
        charge.offer(cmax * f, _mos_reason, r.mos_temperature)
        discharge.offer(dmax * f, _mos_reason, r.mos_temperature)
    if r.soc is not None:
        if curves.charge_soc:
            charge.offer(cmax * curves.charge_soc(r.soc), _soc_reason, r.soc)
        if curves.discharge_soc:
            discharge.offer(dmax * curves.discharge_soc(r.soc), _soc_reason, r.soc)
    without_switch = charge.limit()
    if r.charge_switch is False:
        charge.offer(0.0, "BMS charge switch off")
    if r.discharge_switch is False:
        discharge.offer(0.0, "BMS discharge switch off")
    return charge.limit(), discharge.limit(), without_switch


# --- one pack ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Output:
    cvl: Limit | None
    ccl: Limit
    dcl: Limit
    mode: str
    soc_reset_due: bool = False
    last_full_charge: float | None = None

    @property
    def allow_charge(self) -> bool:
        return self.ccl.value > 0

    @property
    def allow_discharge(self) -> bool:
        return self.dcl.value > 0


@dataclass(slots=True)
class PackControl:
    voltage: ChargeVoltage = field(default_factory=ChargeVoltage)
    charge: CurrentLimit = field(default_factory=CurrentLimit)
    discharge: CurrentLimit = field(default_factory=CurrentLimit)
    last: Reading | None = None
    output: Output | None = None
    blocked: str | None = None  # why telemetry loss blocks, if it does
    holding: bool = False  # telemetry lost, limits kept within the grace period
    # The limits as they would be without the BMS's own switch state: what switch actions follow.
    allow_charge_ex_switch: bool = True

    def evaluate(self, r: Reading, cfg: ChargeControlConfig, curves: Curves, *, hold: str | None = None,
                 max_reasons: tuple[str, str] = (CONFIGURED_MAXIMUM, CONFIGURED_MAXIMUM)) -> Output:
        self.last = r
        self.blocked, self.holding = None, False
        cvl, mode = self.voltage.evaluate(r, cfg, hold)
        ccl_t, dcl_t, ccl_free = current_targets(r, cfg, curves, max_reasons)
        ccl = self.charge.update(ccl_t, r.ts, cfg.max_charge_current, cfg)
        dcl = self.discharge.update(dcl_t, r.ts, cfg.max_discharge_current, cfg)
        self.allow_charge_ex_switch = ccl_free.value > 0
        self.output = Output(cvl, ccl, dcl, mode, self.voltage.soc_reset_due(r.ts, cfg), self.voltage.last_full_charge)
        return self.output

    def reapply(self, cfg: ChargeControlConfig, curves: Curves, *, hold: str | None = None,
                max_reasons: tuple[str, str] = (CONFIGURED_MAXIMUM, CONFIGURED_MAXIMUM),
                voltage_target_changed: bool = False) -> bool:
        """Settings changed: evaluate the last reading again so new limits apply now, not at the next sample.
        False (nothing done) without a reading, or while blocked for lost telemetry: a stale reading must
        never lift that block; the new settings apply with the next sample."""
        if self.last is None or self.blocked is not None:
            return False
        v = self.voltage
        if voltage_target_changed and v.allow_max and not v.ovp and v.raise_since is None:
            # A person raised the bulk target: apply it now. The slow hold-and-ramp is for recovering from a
            # cell overvoltage (kept while one is controlled or being recovered from), not for a change.
            v.applied = None
        holding = self.holding
        out = self.evaluate(self.last, cfg, curves, hold=hold, max_reasons=max_reasons)
        if holding:  # still silent: keep saying so (silence() would not repeat it)
            self.holding = True
            out.mode = f"{out.mode} (telemetry lost, holding limits)"
        return True

    def silence(self, silent_for: float, cfg: ChargeControlConfig) -> bool:
        """Telemetry has been silent for `silent_for` s (aggregator clock). True if the output changed."""
        if self.output is None or silent_for <= cfg.telemetry_timeout:
            return False
        cells = self.last.cells if self.last else ()
        if cfg.block_on_disconnect:
            why = f"telemetry lost for {silent_for:.0f} s (block_on_disconnect)"
        elif not cells or not (cfg.safe_cell_min <= min(cells) and max(cells) <= cfg.safe_cell_max):
            span = f"{min(cells):.3f}..{max(cells):.3f} V" if cells else "unknown"
            why = (f"telemetry lost for {silent_for:.0f} s; last cells {span} outside the safe window "
                   f"{cfg.safe_cell_min:.3f}..{cfg.safe_cell_max:.3f} V")
        elif silent_for > cfg.telemetry_timeout + cfg.disconnect_grace:
            why = f"telemetry lost for {silent_for:.0f} s, longer than the {cfg.disconnect_grace:.0f} s grace"
        else:
            if self.holding:
                return False
            self.holding = True
            self.output.mode = f"{self.output.mode.split(' (telemetry lost')[0]} (telemetry lost, holding limits)"
            return True
        if self.blocked is not None:
            return False
        self.blocked = why
        self.holding = False
        ts = self.last.ts if self.last else 0.0
        self.output = Output(self.output.cvl, self.charge.block(why, ts), self.discharge.block(why, ts),
                             "Blocked (telemetry lost)", self.output.soc_reset_due, self.output.last_full_charge)
        self.allow_charge_ex_switch = False
        return True

    def dump(self) -> dict[str, Any]:
        return {"voltage": asdict(self.voltage), "charge": asdict(self.charge), "discharge": asdict(self.discharge),
                "last": asdict(self.last) if self.last else None, "blocked": self.blocked, "holding": self.holding,
                "output": _dump_output(self.output), "allow_charge_ex_switch": self.allow_charge_ex_switch}

    @classmethod
    def load(cls, d: dict[str, Any]) -> PackControl:
        last = d.get("last")
        if last:
            last = Reading(**{**last, "cells": tuple(last["cells"]), "temperatures": tuple(last["temperatures"])})
        return cls(ChargeVoltage(**d["voltage"]), CurrentLimit(**d["charge"]), CurrentLimit(**d["discharge"]),
                   last, _load_output(d.get("output")), d.get("blocked"), d.get("holding", False),
                   d.get("allow_charge_ex_switch", True))


def _dump_output(o: Output | None) -> dict[str, Any] | None:
    return asdict(o) if o else None


def _load_output(d: dict[str, Any] | None) -> Output | None:
    if not d:
        return None
    return Output(Limit(**d["cvl"]) if d.get("cvl") else None, Limit(**d["ccl"]), Limit(**d["dcl"]), d["mode"],
                  d.get("soc_reset_due", False), d.get("last_full_charge"))


# --- groups --------------------------------------------------------------------------------------


def group_output(topology: str, members: Sequence[tuple[str, Output, float | None]]) -> Output | None:
    """The group's limits from its members' (id, output, capacity).

    Parallel: CVL = the lowest member CVL (one high cell anywhere pulls the bank down). CCL/DCL = the
    largest bank current at which no member exceeds its own limit, assuming current splits in proportion
    to capacity (equally if a capacity is unknown): min over members of limit_i × Σcap / cap_i. A member
    at 0 therefore blocks the group. Series: CVL = Σ member CVLs, CCL/DCL = the lowest member limit.
    """
    if not members:
        return None
    cvls = [(m, o.cvl) for m, o, _ in members if o.cvl is not None]
    if topology == "series":
        cvl = Limit(sum(c.value for _, c in cvls), "sum of members: " + ", ".join(f"{m} {c.reason}" for m, c in cvls)) \
            if len(cvls) == len(members) else None
        ccl = lowest([Limit(o.ccl.value, f"{m}: {o.ccl.reason}") for m, o, _ in members])
        dcl = lowest([Limit(o.dcl.value, f"{m}: {o.dcl.reason}") for m, o, _ in members])
        mode_of = min(members, key=lambda e: e[1].cvl.value if e[1].cvl else math.inf)
    else:
        cvl_m = lowest([Limit(c.value, f"{m}: {c.reason}") for m, c in cvls]) if cvls else None
        cvl = cvl_m
        caps = [c for _, _, c in members]
        known = all(c and c > 0 for c in caps)
        total = sum(caps) if known else float(len(members))  # type: ignore[arg-type]

        def share(attr: str) -> Limit:
            cands = []
            for (m, o, c) in members:
                lim: Limit = getattr(o, attr)
                factor = total / (c if known else 1.0)  # type: ignore[operator]
                cands.append(Limit(lim.value * factor, f"{m}: {lim.reason}" + (
                    f" (× {factor:.2f}, its share of the bank current)" if lim.value > 0 else "")))
            return lowest(cands)

        ccl, dcl = share("ccl"), share("dcl")
        mode_of = min(members, key=lambda e: e[1].cvl.value if e[1].cvl else math.inf)
    mode = mode_of[1].mode if len(members) == 1 or len({o.mode for _, o, _ in members}) == 1 \
        else f"{mode_of[1].mode} ({mode_of[0]})"
    return Output(cvl, ccl, dcl, mode, any(o.soc_reset_due for _, o, _ in members),
                  max((o.last_full_charge for _, o, _ in members if o.last_full_charge), default=None))
