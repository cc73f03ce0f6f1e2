"""The quantity catalog: every value bmsbus carries, declared once.

A key here is the field name on the bus, the Influx field and the suffix of the Home Assistant
object id. Keys are never renamed in place: HA unique ids and Influx series depend on them.
Consumers (HA bridge, Influx writer, docs) derive their output from these specs and nothing else.

Units are SI-ish and fixed per key: V, A, W, %, Ah, °C, Ohm, s, kWh. Current and power are positive
while charging.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final


class Kind(StrEnum):
    MEASUREMENT = "measurement"  # a reading that goes up and down
    TOTAL_INCREASING = "total_increasing"  # a counter that only grows (cycles, energy meters)
    TOTAL = "total"  # a signed running total (net energy)
    STATE = "state"  # a non-numeric or boolean state
    ENUM = "enum"  # one of a fixed set of strings


class Semantic(StrEnum):
    VOLTAGE = "voltage"
    CURRENT = "current"
    POWER = "power"
    SOC = "soc"
    SOH = "soh"
    CHARGE = "charge"  # Ah
    ENERGY = "energy"  # kWh meters
    ENERGY_STORAGE = "energy_storage"  # kWh stored
    TEMPERATURE = "temperature"
    RESISTANCE = "resistance"
    DURATION = "duration"
    COUNT = "count"
    SWITCH = "switch"
    INDEX = "index"  # cell index
    CODE = "code"  # problem codes, alarm lists
    SIGNAL = "signal"  # RSSI


class Shape(StrEnum):
    SCALAR = "scalar"
    PER_CELL = "per_cell"  # list indexed by cell, 0-based on the bus, named 1-based for people
    PER_SENSOR = "per_sensor"  # list indexed by temperature sensor
    INDICES = "indices"  # list of cell indices (0-based)
    MAPPING = "mapping"  # {name: value}
    LABELS = "labels"  # list of string codes


class Category(StrEnum):
    PRIMARY = "primary"
    DIAGNOSTIC = "diagnostic"


@dataclass(frozen=True, kw_only=True, slots=True)
class QuantitySpec:
    key: str
    unit: str | None
    kind: Kind
    semantic: Semantic
    description: str
    shape: Shape = Shape.SCALAR
    precision: int = 2
    category: Category = Category.PRIMARY
    # Name pattern for one element of a PER_CELL / PER_SENSOR quantity ("cell {n} voltage").
    element_name: str | None = None


def _q(key: str, unit: str | None, kind: Kind, semantic: Semantic, description: str, **kw: object) -> QuantitySpec:
    return QuantitySpec(key=key, unit=unit, kind=kind, semantic=semantic, description=description, **kw)  # type: ignore[arg-type]


M, TI, T, S = Kind.MEASUREMENT, Kind.TOTAL_INCREASING, Kind.TOTAL, Kind.STATE
DIAG = Category.DIAGNOSTIC

# Values a BMS sample can carry (the `sample` message). Order is the order people see them in.
SAMPLE_QUANTITIES: Final[tuple[QuantitySpec, ...]] = (
    _q("voltage", "V", M, Semantic.VOLTAGE, "Pack voltage", precision=2),
    _q("current", "A", M, Semantic.CURRENT, "Pack current, positive while charging", precision=2),
    _q("power", "W", M, Semantic.POWER, "Pack power, positive while charging", precision=1),
    _q("soc", "%", M, Semantic.SOC, "State of charge", precision=1),
    _q("soh", "%", M, Semantic.SOH, "State of health", precision=0),
    _q("charge", "Ah", M, Semantic.CHARGE, "Remaining charge", precision=2),
    _q("capacity", "Ah", M, Semantic.CHARGE, "Full-charge capacity as the BMS reports it", precision=1),
    _q("design_capacity", "Ah", M, Semantic.CHARGE, "Nominal (design) capacity", precision=1, category=DIAG),
    _q("cycles", None, TI, Semantic.COUNT, "Charge cycles counted by the BMS", precision=0),
    _q("cycle_charge", "Ah", TI, Semantic.CHARGE, "Cumulative charge throughput counted by the BMS", precision=1,
       category=DIAG),
    _q("energy", "kWh", M, Semantic.ENERGY_STORAGE, "Stored energy as the BMS reports it", precision=3),
    _q("cell_voltages", "V", M, Semantic.VOLTAGE, "Cell voltages", shape=Shape.PER_CELL, precision=3,
       category=DIAG, element_name="cell {n} voltage"),
    _q("cell_resistances", "Ohm", M, Semantic.RESISTANCE, "Cell balance-lead resistances", shape=Shape.PER_CELL,
       precision=4, category=DIAG, element_name="cell {n} resistance"),
    _q("temperatures", "°C", M, Semantic.TEMPERATURE, "Pack temperature sensors", shape=Shape.PER_SENSOR,
       precision=1, element_name="temperature {n}"),
    _q("mos_temperature", "°C", M, Semantic.TEMPERATURE, "MOSFET temperature", precision=1),
    _q("balance_current", "A", M, Semantic.CURRENT, "Balancer current", precision=3, category=DIAG),
    _q("balancing", None, S, Semantic.INDEX, "Cells being balanced (0-based indices)", shape=Shape.INDICES,
       category=DIAG),
    _q("switches", None, S, Semantic.SWITCH, "Switch states (charge, discharge, balance, heater, ...)",
       shape=Shape.MAPPING),
    _q("alarms", None, S, Semantic.CODE, "Active alarm codes", shape=Shape.LABELS, category=DIAG),
    _q("problem_code", None, S, Semantic.CODE, "Raw problem bitmask as the BMS reports it", precision=0,
       category=DIAG),
    _q("uptime", "s", TI, Semantic.DURATION, "BMS uptime", precision=0, category=DIAG),
)

SAMPLE_KEYS: Final[frozenset[str]] = frozenset(q.key for q in SAMPLE_QUANTITIES)

# Values the aggregator derives per pack and per group (the `battery/<id>/state` message).
STATE_QUANTITIES: Final[tuple[QuantitySpec, ...]] = (
    _q("cell_min", "V", M, Semantic.VOLTAGE, "Lowest cell voltage", precision=3),
    _q("cell_max", "V", M, Semantic.VOLTAGE, "Highest cell voltage", precision=3),
    _q("cell_delta", "V", M, Semantic.VOLTAGE, "Highest minus lowest cell voltage", precision=3),
    _q("cell_avg", "V", M, Semantic.VOLTAGE, "Average cell voltage", precision=3),
    _q("cell_min_index", None, S, Semantic.INDEX, "Index (0-based) of the lowest cell; in a group, within its pack",
       precision=0),
    _q("cell_max_index", None, S, Semantic.INDEX, "Index (0-based) of the highest cell; in a group, within its pack",
       precision=0),
    _q("cell_min_member", None, S, Semantic.CODE, "Group: the pack holding the lowest cell", category=DIAG),
    _q("cell_max_member", None, S, Semantic.CODE, "Group: the pack holding the highest cell", category=DIAG),
    _q("energy_in_kwh", "kWh", TI, Semantic.ENERGY, "Energy into the battery", precision=3),
    _q("energy_out_kwh", "kWh", TI, Semantic.ENERGY, "Energy out of the battery", precision=3),
    _q("energy_net_kwh", "kWh", T, Semantic.ENERGY, "Energy in minus energy out", precision=3),
    _q("charge_in_ah", "Ah", TI, Semantic.CHARGE, "Charge into the battery", precision=2),
    _q("charge_out_ah", "Ah", TI, Semantic.CHARGE, "Charge out of the battery", precision=2),
    _q("charge_net_ah", "Ah", T, Semantic.CHARGE, "Charge in minus charge out", precision=2),
    # Reset to 0 with the meters (battery/<id>/meters/reset): total_increasing reads a drop as a meter reset.
    _q("cycles_soc", None, TI, Semantic.COUNT, "Cycles counted by the aggregator from SoC swings (½·Σ|ΔSoC|/100)",
       precision=2),
    _q("cycles_throughput", None, TI, Semantic.COUNT, "Cycles from charge throughput: (in + out) / 2 / capacity",
       precision=2),
    _q("time_to_empty", "s", M, Semantic.DURATION, "Time to empty at the present discharge current", precision=0),
    _q("time_to_full", "s", M, Semantic.DURATION, "Time to full at the present charge current", precision=0),
    _q("stale_members", None, S, Semantic.CODE, "Group: members left out of the sums because they went quiet",
       shape=Shape.LABELS, category=DIAG),
)

CATALOG: Final[dict[str, QuantitySpec]] = {q.key: q for q in SAMPLE_QUANTITIES + STATE_QUANTITIES}


def spec(key: str) -> QuantitySpec:
    """The spec of a catalog key; KeyError names the key if it is not in the catalog."""
    try:
        return CATALOG[key]
    except KeyError:
        raise KeyError(f"{key!r} is not a bmsbus quantity") from None
