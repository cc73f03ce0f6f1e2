"""aiobmsble `BMSSample` -> bmsbus Reading, as a data table.

Pure: no I/O, no aiobmsble import (a sample is a plain mapping; temperature entries may be aiobmsble
`TempSensor`s, plain numbers or `{"value", "type"}` dicts). Units, from aiobmsble's `BMSSample` comments:

| aiobmsble | unit | bmsbus | unit |
|---|---|---|---|
| cycle_charge | Ah remaining | charge | Ah |
| cycle_capacity | Wh stored (= V x cycle_charge) | energy | kWh (x 0.001) |
| total_charge | Ah discharged over the lifetime | cycle_charge | Ah throughput |
| battery_level / battery_health | % | soc / soh | % |

Current and power are positive while charging in both. A value that is not a finite number, or lies
outside its row's bounds, is left out (absent, never NaN). Keys aiobmsble reports that have no catalog
key are listed in UNMAPPED with the reason, so a new aiobmsble key fails a test instead of vanishing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from ...codec import Reading

# aiobmsble TempSensor.T names; a sensor given as a plain number is GENERIC.
MOSFET: Final = "MOSFET"
# Alarm code for aiobmsble's own `problem` flag (its problem_code bits are plugin-specific, unnamed).
PROBLEM_ALARM: Final = "bms_problem"


# --- named converters (bitfields, enums and shapes; no lambdas) -------------------------------------

def number(value: Any) -> float | int | None:
    """finite number"""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return value if math.isfinite(value) else None


def count(value: Any) -> int | None:
    """non-negative integer"""
    v = number(value)
    return int(v) if v is not None and v >= 0 and v == int(v) else None


def flag(value: Any) -> bool | None:
    """boolean"""
    return value if isinstance(value, bool) else None


def volt_list(value: Any) -> list[float] | None:
    """list of V; a non-finite cell drops the list (cells keep their positions)"""
    if not isinstance(value, (list, tuple)):
        return None
    out = [number(v) for v in value]
    return None if any(v is None for v in out) else [float(v) for v in out]  # type: ignore[arg-type]


def _sensor(entry: Any) -> tuple[float | None, str]:
    if isinstance(entry, Mapping):
        return number(entry.get("value")), str(entry.get("type", "GENERIC"))
    kind = getattr(entry, "type", None)
    raw = getattr(entry, "value", entry)
    return number(raw), (kind.name if kind is not None else "GENERIC")


def pack_temperatures(value: Any) -> list[float] | None:
    """every sensor except MOSFET-typed ones, °C"""
    if not isinstance(value, (list, tuple)):
        return None
    temps = [t for t, kind in map(_sensor, value) if kind != MOSFET and t is not None]
    return [float(t) for t in temps] if temps else None


def hottest_mosfet(value: Any) -> float | None:
    """highest MOSFET-typed sensor, °C (JK reports two)"""
    if not isinstance(value, (list, tuple)):
        return None
    temps = [t for t, kind in map(_sensor, value) if kind == MOSFET and t is not None]
    return float(max(temps)) if temps else None


def single_temperature(value: Any) -> list[float] | None:
    """[temperature], for plugins that report no per-sensor list"""
    v = number(value)
    return None if v is None else [float(v)]


def cell_bitmask(value: Any) -> list[int] | None:
    """integer bitmask, bit 0 = cell 1 -> 0-based cell indices"""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return [i for i in range(value.bit_length()) if value >> i & 1]


def problem_alarms(value: Any) -> list[str] | None:
    """`["bms_problem"]` when aiobmsble's problem flag is set (device flag, problem_code, failed sanity check), else []"""
    if not isinstance(value, bool):
        return None
    return [PROBLEM_ALARM] if value else []


# --- the table -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class FieldMap:
    """One aiobmsble key -> one bmsbus catalog key.

    `scale` multiplies a scalar number (unit conversion). `convert` is a named converter returning the
    value or None (= absent). `switch` names the entry of the `switches` mapping a boolean goes to.
    `fallback` rows apply only when an earlier row did not already set the target.
    """

    source: str
    target: str
    scale: float = 1.0
    convert: Callable[[Any], Any] = number
    lo: float | None = None
    hi: float | None = None
    switch: str | None = None
    fallback: bool = False
    note: str = ""


FIELD_MAP: Final[tuple[FieldMap, ...]] = (
    FieldMap("voltage", "voltage"),
    FieldMap("current", "current"),
    FieldMap("power", "power"),
    FieldMap("battery_level", "soc", lo=0, hi=100),
    FieldMap("battery_health", "soh", lo=0, hi=100),
    FieldMap("cycle_charge", "charge", note="Ah remaining"),
    FieldMap("cycle_capacity", "energy", scale=0.001, note="Wh stored -> kWh"),
    FieldMap("design_capacity", "design_capacity"),
    FieldMap("cycles", "cycles", convert=count),
    FieldMap("total_charge", "cycle_charge", note="Ah discharged over the lifetime"),
    FieldMap("cell_voltages", "cell_voltages", convert=volt_list),
    FieldMap("temp_values", "temperatures", convert=pack_temperatures),
    FieldMap("temperature", "temperatures", convert=single_temperature, fallback=True),
    FieldMap("temp_values", "mos_temperature", convert=hottest_mosfet),
    FieldMap("balance_current", "balance_current"),
    FieldMap("balancer", "balancing", convert=cell_bitmask),
    FieldMap("balancer", "switches", convert=flag, switch="balance", note="an on/off flag; a bitmask goes to balancing"),
    FieldMap("chrg_mosfet", "switches", convert=flag, switch="charge"),
    FieldMap("dischrg_mosfet", "switches", convert=flag, switch="discharge"),
    FieldMap("heater", "switches", convert=flag, switch="heater"),
    FieldMap("problem_code", "problem_code", convert=count),
    FieldMap("problem", "alarms", convert=problem_alarms),
)

# aiobmsble keys deliberately not mapped, and why.
UNMAPPED: Final[dict[str, str]] = {
    "battery_charging": "derived from the sign of current",
    "battery_mode": "charger stage (bulk/absorption/float); no catalog key",
    "cell_count": "len(cell_voltages)",
    "delta_voltage": "derived by the aggregator (cell_delta)",
    "temp_sensors": "number or bitmask of sensors; the list itself is mapped",
    "runtime": "aiobmsble's time-to-empty estimate; no catalog key",
    "heater_current": "no catalog key",
    "pack_count": "len(packs)",
    "packs": "per-pack details; aiobmsble already aggregates them into the top-level keys",
}


def mapped_targets() -> frozenset[str]:
    """Every catalog key map_sample can produce."""
    return frozenset(row.target for row in FIELD_MAP)


def map_sample(bms_sample: Mapping[str, Any]) -> Reading:
    """One aiobmsble BMSSample -> canonical Reading (absent values stay absent)."""
    out: Reading = {}
    for row in FIELD_MAP:
        if row.source not in bms_sample:
            continue
        if row.fallback and row.target in out:
            continue
        value = row.convert(bms_sample[row.source])
        if value is None:
            continue
        if row.scale != 1.0 and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = round(value * row.scale, 9)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            (row.lo is not None and value < row.lo) or (row.hi is not None and value > row.hi)
        ):
            continue
        if row.switch is not None:
            out.setdefault("switches", {})[row.switch] = value
        else:
            out[row.target] = value
    return out


def mapping_table_markdown() -> str:
    """The docs table of FIELD_MAP and UNMAPPED (docs/bms/aiobmsble.md embeds it; a test keeps it current)."""
    rows = ["| aiobmsble key | bmsbus key | conversion |", "|---|---|---|"]
    for row in FIELD_MAP:
        target = f"switches.{row.switch}" if row.switch else row.target
        how = [(row.convert.__doc__ or row.convert.__name__).strip()]
        if row.note:
            how.append(row.note)
        if row.scale != 1.0:
            how.append(f"x {row.scale:g}")
        if row.lo is not None or row.hi is not None:
            how.append(f"kept only within {row.lo:g}..{row.hi:g}")
        if row.fallback:
            how.append("only if no earlier row set it")
        rows.append(f"| `{row.source}` | `{target}` | {'; '.join(how)} |")
    for key, why in UNMAPPED.items():
        rows.append(f"| `{key}` | – | not mapped: {why} |")
    return "\n".join(rows)
