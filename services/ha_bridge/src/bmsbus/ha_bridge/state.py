"""Bus messages -> the flat JSON of the HA state topics (`<root>/ha/<id>/<source>`, entities.SOURCES). Pure.

Why the bridge republishes instead of pointing HA's value templates at the bus topics:
- every value template is the same trivial `{{ value_json.<key> }}`; derived values (discharge-positive
  power, per-cell expansion, 1-based cell numbers, ON/OFF, problem flag) are computed here in Python,
  unit-tested, instead of in Jinja nobody can test without a running HA; values the aggregator computes
  (meters, cycles, time to empty/full) are passed through, never computed a second time here;
- every key an entity reads is always present: an absent value is `null`, which renders as `None` and HA
  shows "unknown" (no template warnings for keys a particular sample lacks);
- the HA-facing schema is decoupled from the bus schema: bus fields can evolve without breaking templates.

Rounding: to the catalog's `precision` decimal places (never significant digits), so a 123456.789 kWh
meter keeps its Wh. Rounding to fixed decimals is monotonic, so a `total_increasing` meter stays monotonic.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from bmsbus.shared.models import BatteryState, Control, Link, Meta, Sample

from .entities import Entity, bms_setting_key

def _on(v: bool | None) -> str | None:
    return None if v is None else ("ON" if v else "OFF")


def _cells(prefix: str, values: Iterable[float] | None) -> dict[str, float]:
    return {f"{prefix}_{n}": v for n, v in enumerate(values or (), start=1)}


def _cell_stats(cells: list[float] | None) -> dict[str, Any]:
    if not cells:
        return {}
    lo = min(range(len(cells)), key=cells.__getitem__)
    hi = max(range(len(cells)), key=cells.__getitem__)
    return {"cell_min": cells[lo], "cell_max": cells[hi], "cell_delta": cells[hi] - cells[lo],
            "cell_avg": sum(cells) / len(cells), "cell_min_index": lo + 1, "cell_max_index": hi + 1}


def sample_values(s: Sample) -> dict[str, Any]:
    """Every value an entity of the `sample` source may read, by entity key."""
    v: dict[str, Any] = s.values()
    for k in ("cell_voltages", "cell_resistances", "temperatures", "balancing", "switches", "alarms"):
        v.pop(k, None)
    power = s.power if s.power is not None else (
        s.voltage * s.current if s.voltage is not None and s.current is not None else None)
    if power is not None:
        v["power_flow"] = -power
    v.update(_cells("cell_voltages", s.cell_voltages))
    v.update(_cells("cell_resistances", s.cell_resistances))
    v.update(_cells("temperatures", s.temperatures))
    v.update(_cell_stats(s.cell_voltages))
    if s.balancing is not None:
        v["balancing"] = _on(bool(s.balancing))
    for name, on in (s.switches or {}).items():
        v[f"switch_{name}"] = _on(on)
    if s.alarms is not None:
        v["alarms"] = ", ".join(s.alarms)[:255] if s.alarms else "none"
    if s.alarms is not None or s.problem_code is not None:
        v["problem"] = _on(bool(s.alarms) or bool(s.problem_code))
    return v


def state_values(st: BatteryState) -> dict[str, Any]:
    v: dict[str, Any] = st.model_dump(exclude_none=True, exclude={"schema_version", "id", "kind", "ts", "members",
                                                                   "stale", "temperatures", "alarms",
                                                                   "member_temperatures", "stale_members", "degraded"})
    v["alarm"] = _on(bool(st.alarms))
    v["active_alarms"] = "; ".join(a.text for a in st.alarms)[:255] if st.alarms else "none"
    v["degraded"] = _on(st.degraded)
    v["stale_members"] = ", ".join(st.stale_members)[:255] if st.stale_members else "none"
    if st.power is not None:
        v["power_flow"] = -st.power
    for k in ("cell_min_index", "cell_max_index"):
        if isinstance(v.get(k), int):
            v[k] += 1  # 0-based on the bus, 1-based for people
    v.update(_cells("temperatures", st.temperatures))
    return v


def charge_mode(mode: str) -> str:
    """The base state of Control.mode ("Absorption (Cell OVP) + Balancing" -> "absorption")."""
    m = mode.strip().lower()
    for base in ("float transition", "float", "absorption", "bulk", "blocked"):
        if m.startswith(base):
            return base.replace(" ", "_")
    return "other"


def control_values(c: Control) -> dict[str, Any]:
    v: dict[str, Any] = {"charge_mode": charge_mode(c.mode), "charge_mode_detail": c.mode[:255],
                         "allow_charge": _on(c.allow_charge), "allow_discharge": _on(c.allow_discharge),
                         "soc_reset_due": _on(c.soc_reset_due), "soc_window": c.soc_window or "off"}
    for key in ("charge_voltage", "charge_current", "discharge_current"):
        limit = getattr(c, key)
        if limit is not None:
            v[key], v[f"{key}_reason"] = limit.value, limit.reason[:255]
    return v


def group_switch_values(member_switches: Iterable[Mapping[str, bool] | None], names: Iterable[str]) -> dict[str, Any]:
    """A group's switch is ON when every member reports it on, OFF when every member reports it off,
    unknown when they disagree or a member has not reported it."""
    members = list(member_switches)
    v: dict[str, Any] = {}
    for name in names:
        states = {m.get(name) if m is not None else None for m in members}
        v[f"switch_{name}"] = _on(states.pop()) if len(states) == 1 and None not in states else None
    return v


def bms_setting_values(meta: Meta) -> dict[str, Any]:
    """The BMS's own settings as last read (`Meta.setting_values`), by entity key; a declared setting not read
    yet is absent, so its number shows "unknown"."""
    return {bms_setting_key(name): value for name, value in meta.setting_values.items()}


def diag_values(link: Link | None, last_command: str | None) -> dict[str, Any]:
    v: dict[str, Any] = {"last_command": last_command}
    if link is not None:
        v.update(link_state=link.state, last_error=(link.last_error or "none")[:255], rssi=link.rssi)
    return v


def _round(value: Any, precision: int | None) -> Any:
    if isinstance(value, bool) or not isinstance(value, float) or precision is None:
        return value
    if not math.isfinite(value):
        return None
    r = round(value, precision)
    return int(r) if precision <= 0 else r


def render(entities: Iterable[Entity], source: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON for one HA state topic: every entity of that source, rounded, null when absent."""
    return {e.key: _round(values.get(e.key), e.precision) for e in entities if e.source == source}
