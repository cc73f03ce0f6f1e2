"""Low/normal states with hysteresis on one quantity of a battery (cell_min by default).

With `low < normal` the rule watches for a value falling: it enters `low` at or below `low` and returns
to `normal` at or above `normal`. With `low > normal` it watches for a value rising (e.g. cell_max). The
band between is the hysteresis: nothing changes there. The first value seen only sets the state (a
battery first seen in `low` does fire the low actions; first seen normal fires nothing). Pure.
"""

from __future__ import annotations

from typing import Any

from bmsbus.shared.config import CellStateConfig


def quantity(readings: dict[str, Any], name: str) -> float | None:
    if name in ("temperature_min", "temperature_max"):
        temps = readings.get("temperatures")
        if not temps:
            return None
        return min(temps) if name == "temperature_min" else max(temps)
    v = readings.get(name)
    return float(v) if isinstance(v, (int, float)) else None


def next_state(rule: CellStateConfig, current: str | None, value: float) -> str | None:
    """The state after seeing `value`; None while it stays undecided (first value inside the band)."""
    falling = rule.low < rule.normal
    is_low = value <= rule.low if falling else value >= rule.low
    is_normal = value >= rule.normal if falling else value <= rule.normal
    if is_low:
        return "low"
    if is_normal:
        return "normal"
    return current if current is not None else "normal"


class CellStates:
    """The state of every (rule, battery) pair."""

    def __init__(self) -> None:
        self.states: dict[str, str] = {}  # "<rule>/<battery>" -> "low" | "normal"

    def update(self, rule: CellStateConfig, battery: str, value: float | None) -> str | None:
        """The new state if this value makes a transition that should fire actions, else None."""
        if value is None:
            return None
        key = f"{rule.name}/{battery}"
        before = self.states.get(key)
        after = next_state(rule, before, value)
        if after is None or after == before:
            return None
        self.states[key] = after
        if before is None and after == "normal":
            return None  # first seen and fine: nothing to undo
        return after

    def dump(self) -> dict[str, str]:
        return dict(self.states)

    def load(self, d: dict[str, str]) -> None:
        self.states = dict(d)
