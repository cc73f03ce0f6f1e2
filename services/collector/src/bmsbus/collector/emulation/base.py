"""What every BMS emulator shares: the pack state it serves and a little physics to make it move.

An emulator is sans-I/O, like a codec: `receive(bytes written by the host) -> [frames to send back]`
and `tick(now) -> [frames the device sends on its own]`. It answers with byte-exact frames built from
a PackState and applies switch and setting writes to it. Faults are injected by the emulator
(`faults`) so the same fault set works over every link.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Protocol

# Open-circuit voltage per cell against SoC (0..100 %), per chemistry.
OCV_CURVES: dict[str, tuple[tuple[float, float], ...]] = {
    "lfp": ((0, 2.80), (5, 3.05), (10, 3.18), (20, 3.24), (40, 3.28), (60, 3.30), (80, 3.33), (95, 3.38),
            (100, 3.45)),
    "nmc": ((0, 3.00), (10, 3.45), (20, 3.55), (40, 3.68), (60, 3.82), (80, 3.98), (100, 4.15)),
    "lto": ((0, 1.90), (10, 2.10), (30, 2.25), (50, 2.32), (70, 2.40), (90, 2.55), (100, 2.70)),
}
CHEMISTRIES = tuple(OCV_CURVES)


def ocv(chemistry: str, soc: float) -> float:
    curve = OCV_CURVES[chemistry]
    soc = min(100.0, max(0.0, soc))
    xs = [p[0] for p in curve]
    i = max(1, bisect_left(xs, soc))
    (x0, y0), (x1, y1) = curve[i - 1], curve[min(i, len(curve) - 1)]
    return y0 if x1 == x0 else y0 + (y1 - y0) * (soc - x0) / (x1 - x0)


@dataclass
class PackState:
    """Everything an emulator can report. SI units, current + = charging, cells 0-based."""

    cell_voltages: list[float] = field(default_factory=lambda: [3.30] * 16)
    cell_resistances: list[float] = field(default_factory=lambda: [0.0] * 16)
    current: float = 0.0
    temperatures: list[float] = field(default_factory=lambda: [25.0, 25.0])
    mos_temperature: float = 25.0
    soc: float = 50.0
    soh: float = 100.0
    capacity: float = 100.0  # Ah, full-charge
    design_capacity: float = 100.0
    charge: float = 50.0  # Ah remaining
    cycles: int = 0
    cycle_charge: float = 0.0  # Ah throughput
    balance_current: float = 0.0
    balancing: list[int] = field(default_factory=list)
    switches: dict[str, bool] = field(default_factory=lambda: {"charge": True, "discharge": True, "balance": True})
    alarms: int = 0  # protocol-neutral: emulators map it to their own bitmask
    uptime: float = 0.0
    chemistry: str = "lfp"
    model: str = "EMU"
    hw_version: str = "1.0"
    sw_version: str = "1.0"
    serial: str = "EMU0001"
    name: str = "emulated"
    settings: dict[str, float] = field(default_factory=dict)

    @property
    def voltage(self) -> float:
        return sum(self.cell_voltages)

    @property
    def power(self) -> float:
        return self.voltage * self.current


@dataclass
class Faults:
    """Faults an emulator injects on demand (probabilities per frame, 0..1). `disconnect` is a link fault:
    EmulatedLink honours it, the emulator itself only carries it."""

    corrupt_checksum: float = 0.0
    junk: float = 0.0  # random bytes before a frame
    truncate: float = 0.0
    silence: bool = False  # answer nothing at all
    disconnect: bool = False  # the device is gone: an open link drops, a new one cannot connect


class Emulator(Protocol):
    state: PackState
    faults: Faults

    def receive(self, data: bytes) -> list[bytes]: ...
    def tick(self, now: float) -> list[bytes]: ...


def apply_faults(frames: list[bytes], faults: Faults, rng: random.Random) -> list[bytes]:
    """The same faults for every emulator: drop all, corrupt a byte, cut short, prepend junk."""
    if faults.silence:
        return []
    out = []
    for frame in frames:
        if faults.corrupt_checksum and rng.random() < faults.corrupt_checksum:
            frame = frame[:-1] + bytes([(frame[-1] + 1) & 0xFF])
        if faults.truncate and rng.random() < faults.truncate:
            frame = frame[: rng.randrange(1, max(2, len(frame)))]
        if faults.junk and rng.random() < faults.junk:
            frame = rng.randbytes(rng.randrange(1, 24)) + frame
        out.append(frame)
    return out


def make_pack(chemistry: str = "lfp", cells: int = 16, capacity_ah: float = 100.0, soc: float = 60.0,
              temperature_sensors: int = 2, name: str = "emulated", seed: int = 0) -> PackState:
    """A plausible pack: cell voltages from the chemistry's OCV curve with small per-cell spread."""
    if chemistry not in OCV_CURVES:
        raise ValueError(f"chemistry {chemistry!r}: allowed {', '.join(CHEMISTRIES)}")
    rng = random.Random(seed)
    spread = [rng.uniform(-0.004, 0.004) for _ in range(cells)]
    base = ocv(chemistry, soc)
    return PackState(
        cell_voltages=[round(base + s, 3) for s in spread],
        cell_resistances=[round(rng.uniform(0.05, 0.12), 3) for _ in range(cells)],
        temperatures=[round(22.0 + rng.uniform(-1, 1), 1) for _ in range(temperature_sensors)],
        mos_temperature=25.0,
        soc=soc,
        capacity=capacity_ah,
        design_capacity=capacity_ah,
        charge=capacity_ah * soc / 100.0,
        chemistry=chemistry,
        name=name,
        serial=f"EMU{seed:05d}",
    )


class PackSimulator:
    """Moves a PackState through time: a slow charge/discharge cycle, coulomb counting, cell voltages
    from OCV plus an IR drop, heating with current, and balancing of the highest cells near the top.
    Deterministic for a given seed and time sequence."""

    def __init__(self, state: PackState, *, amplitude_a: float | None = None, period_s: float = 600.0,
                 seed: int = 0) -> None:
        self.state = state
        self.amplitude = amplitude_a if amplitude_a is not None else state.capacity * 0.3
        self.period = period_s
        self.phase = seed * 1.7
        self._spread = [v - ocv(state.chemistry, state.soc) for v in state.cell_voltages]
        self._last: float | None = None
        self._t = 0.0

    def step(self, now: float) -> PackState:
        s = self.state
        if self._last is None:
            self._last = now
            return s
        dt = max(0.0, min(now - self._last, 60.0))
        self._last = now
        self._t += dt
        wanted = self.amplitude * math.sin(2 * math.pi * self._t / self.period + self.phase)
        # The BMS's own switches decide whether current can flow.
        if wanted > 0 and (not s.switches.get("charge", True) or s.soc >= 100.0):
            wanted = 0.0
        if wanted < 0 and (not s.switches.get("discharge", True) or s.soc <= 0.0):
            wanted = 0.0
        s.current = round(wanted, 3)
        delta_ah = s.current * dt / 3600.0
        s.charge = min(s.capacity, max(0.0, s.charge + delta_ah))
        s.cycle_charge += abs(delta_ah)
        s.cycles = int(s.cycle_charge / (2 * s.capacity)) if s.capacity else 0
        s.soc = 100.0 * s.charge / s.capacity if s.capacity else 0.0
        base = ocv(s.chemistry, s.soc)
        ir = [r * s.current / 1000.0 for r in s.cell_resistances] if s.cell_resistances else [0.0] * len(self._spread)
        s.cell_voltages = [round(base + sp + d, 3) for sp, d in zip(self._spread, ir, strict=False)]
        top = max(s.cell_voltages)
        if s.switches.get("balance", True) and s.current > 0 and top - min(s.cell_voltages) > 0.01:
            s.balancing = [i for i, v in enumerate(s.cell_voltages) if v >= top - 0.002]
            s.balance_current = -0.05
        else:
            s.balancing, s.balance_current = [], 0.0
        heat = abs(s.current) / max(1.0, s.capacity) * 4.0
        s.temperatures = [round(22.0 + heat + 0.1 * i, 1) for i in range(len(s.temperatures))]
        s.mos_temperature = round(24.0 + 1.5 * heat, 1)
        s.uptime += dt
        return s
