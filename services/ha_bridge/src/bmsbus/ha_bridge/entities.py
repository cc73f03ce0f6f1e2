"""The catalog -> Home Assistant entities. Pure; no I/O.

Every numeric sensor's (device_class, state_class) comes from ONE table, `HA_SENSOR_CLASSES`, keyed by the
catalog's (semantic, kind). There are no name or unit heuristics: a quantity whose (semantic, kind) is not in
the table is a programming error (tests run every catalog entry through it).

A few entities are not bus quantities but things the bridge derives for HA (discharge-positive power,
time to empty/full, 1-based cell numbers, link diagnostics, the last command's outcome). They are declared
here as `QuantitySpec`s of the same shape (`LOCAL`), so they go through the same table.

Which entities a device gets is decided by what it declares, never by what happened to be non-null once:
- a pack (one BMS): `Meta.quantities` and `Meta.switches`; per-cell and per-sensor entities are expanded by
  the counts in the meta or, if the meta has none, by the lengths in the first sample; meters and other
  aggregator values by the keys of the pack's `BatteryState`; RSSI once a link message carried one.
- a group: the keys of its `BatteryState`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from bmsbus.shared.models import BatteryState
from bmsbus.shared.quantities import CATALOG, SAMPLE_QUANTITIES, STATE_QUANTITIES, Category, Kind, QuantitySpec
from bmsbus.shared.quantities import Semantic as Sem
from bmsbus.shared.quantities import Shape

# HA-facing state topics (`<root>/ha/<id>/<source>`): one per bus source, so `expire_after` means
# "this source went quiet" and a chatty link topic cannot keep stale sample values alive.
SAMPLE: Final = "sample"  # flattened from bms/<id>/sample
STATE: Final = "state"  # flattened from battery/<id>/state
DIAG: Final = "diag"  # flattened from bms/<id>/link plus the last command's outcome
SOURCES: Final = (SAMPLE, STATE, DIAG)

M, TI, T, S, E = Kind.MEASUREMENT, Kind.TOTAL_INCREASING, Kind.TOTAL, Kind.STATE, Kind.ENUM

# THE table: (semantic, kind) -> (device_class, state_class) for sensors.
HA_SENSOR_CLASSES: Final[Mapping[tuple[Sem, Kind], tuple[str | None, str | None]]] = {
    (Sem.VOLTAGE, M): ("voltage", "measurement"),
    (Sem.CURRENT, M): ("current", "measurement"),
    (Sem.POWER, M): ("power", "measurement"),
    (Sem.SOC, M): ("battery", "measurement"),
    (Sem.SOH, M): (None, "measurement"),  # HA has no SoH device class
    (Sem.CHARGE, M): (None, "measurement"),  # Ah has no device class
    (Sem.CHARGE, TI): (None, "total_increasing"),
    (Sem.CHARGE, T): (None, "total"),
    (Sem.ENERGY, TI): ("energy", "total_increasing"),
    (Sem.ENERGY, T): ("energy", "total"),
    (Sem.ENERGY_STORAGE, M): ("energy_storage", "measurement"),
    (Sem.TEMPERATURE, M): ("temperature", "measurement"),
    (Sem.RESISTANCE, M): (None, "measurement"),  # no resistance device class
    (Sem.DURATION, M): ("duration", "measurement"),
    (Sem.DURATION, TI): ("duration", "total_increasing"),
    (Sem.COUNT, M): (None, "measurement"),
    (Sem.COUNT, TI): (None, "total_increasing"),
    (Sem.SIGNAL, M): ("signal_strength", "measurement"),
    (Sem.INDEX, S): (None, None),  # a cell number: shown, no statistics
    (Sem.CODE, S): (None, None),  # raw codes and free text
    (Sem.CODE, E): ("enum", None),  # enum sensors take no state_class, need `options`
}

# Units HA shows differently from the catalog's ASCII spelling.
HA_UNITS: Final[Mapping[str, str]] = {"Ohm": "Ω"}


def _local(key: str, unit: str | None, kind: Kind, semantic: Sem, description: str, **kw: object) -> QuantitySpec:
    return QuantitySpec(key=key, unit=unit, kind=kind, semantic=semantic, description=description, **kw)  # type: ignore[arg-type]


DIAGNOSTIC = Category.DIAGNOSTIC
LINK_STATES: Final = ("connecting", "connected", "disconnected", "failed")

# Bridge-derived values (not bus quantities): same shape, same table.
LOCAL: Final[dict[str, QuantitySpec]] = {q.key: q for q in (
    _local("power_flow", "W", M, Sem.POWER, "Pack power, positive while DISCHARGING (HA power-flow convention)",
           precision=1),
    _local("time_to_empty", "s", M, Sem.DURATION, "Time to empty at the present discharge current", precision=0),
    _local("time_to_full", "s", M, Sem.DURATION, "Time to full at the present charge current", precision=0),
    _local("cell_min_index", None, S, Sem.INDEX, "Number (1-based) of the lowest cell", precision=0),
    _local("cell_max_index", None, S, Sem.INDEX, "Number (1-based) of the highest cell", precision=0),
    _local("rssi", "dBm", M, Sem.SIGNAL, "BLE signal strength of the link", precision=0, category=DIAGNOSTIC),
    _local("link_state", None, E, Sem.CODE, "State of the link to the BMS", category=DIAGNOSTIC),
    _local("last_error", None, S, Sem.CODE, "Last link error", category=DIAGNOSTIC),
    _local("last_command", None, S, Sem.CODE, "Outcome of the last command sent from HA", category=DIAGNOSTIC),
)}

ENUM_OPTIONS: Final[Mapping[str, tuple[str, ...]]] = {"link_state": LINK_STATES}

# People-facing names (HA prefixes them with the device name). Keys not listed get their key in words.
NAMES: Final[Mapping[str, str]] = {
    "soc": "State of charge", "soh": "State of health", "charge": "Remaining charge", "capacity": "Full capacity",
    "cycle_charge": "Cycle charge", "energy": "Stored energy", "mos_temperature": "MOS temperature",
    "problem_code": "Problem code", "cell_min": "Cell voltage min", "cell_max": "Cell voltage max",
    "cell_delta": "Cell voltage delta", "cell_avg": "Cell voltage average", "cell_min_index": "Lowest cell",
    "cell_max_index": "Highest cell", "energy_in_kwh": "Energy in", "energy_out_kwh": "Energy out",
    "energy_net_kwh": "Energy net", "charge_in_ah": "Charge in", "charge_out_ah": "Charge out",
    "charge_net_ah": "Charge net", "rssi": "Signal strength", "link_state": "Link", "last_error": "Link error",
    "power_flow": "Power flow",
}

# Noisy or rarely wanted entities: present but disabled until the user enables them.
DISABLED_BY_DEFAULT: Final = frozenset({"cell_voltages", "cell_resistances", "rssi", "uptime", "problem_code",
                                        "cycle_charge"})

METER_KEYS: Final = frozenset(q.key for q in STATE_QUANTITIES if q.semantic in (Sem.ENERGY, Sem.CHARGE))
CELL_STAT_KEYS: Final = ("cell_min", "cell_max", "cell_delta", "cell_avg", "cell_min_index", "cell_max_index")


def name_of(key: str) -> str:
    return NAMES.get(key) or key.replace("_", " ").capitalize()


def spec_of(key: str) -> QuantitySpec:
    return LOCAL.get(key) or CATALOG[key]


@dataclass(frozen=True, slots=True)
class Entity:
    key: str  # component id in `components`, unique-id suffix, key in the HA state JSON
    platform: str  # sensor, binary_sensor, switch, button, number, select
    name: str
    source: str | None  # which HA state topic feeds it (None: buttons)
    device_class: str | None = None
    state_class: str | None = None
    unit: str | None = None
    precision: int | None = None  # rounding of the published value and suggested_display_precision
    category: str | None = None  # "diagnostic" / "config"
    enabled: bool = True
    options: tuple[str, ...] | None = None
    expires: bool = True  # gets expire_after (sensors fed by telemetry only)
    link_independent: bool = False  # stays available while the BMS link is down (link diagnostics)
    command: str | None = None  # "<platform>/<name>" under <root>/ha/<id>/, published by HA
    extra: tuple[tuple[str, object], ...] = ()  # platform options (number min/max/step, ...)


def sensor(spec: QuantitySpec, *, source: str, key: str | None = None, name: str | None = None,
           enabled: bool | None = None, expires: bool = True, link_independent: bool = False) -> Entity:
    try:
        device_class, state_class = HA_SENSOR_CLASSES[(spec.semantic, spec.kind)]
    except KeyError:
        raise KeyError(f"no HA sensor class for {spec.key!r} ({spec.semantic}, {spec.kind}); "
                       "add the pair to HA_SENSOR_CLASSES") from None
    return Entity(
        key=key or spec.key, platform="sensor", name=name or name_of(spec.key), source=source,
        device_class=device_class, state_class=state_class,
        unit=HA_UNITS.get(spec.unit, spec.unit) if spec.unit and device_class != "enum" else None,
        precision=spec.precision if state_class is not None or spec.semantic is Sem.INDEX else None,
        category="diagnostic" if spec.category is DIAGNOSTIC else None,
        enabled=(spec.key not in DISABLED_BY_DEFAULT) if enabled is None else enabled,
        options=ENUM_OPTIONS.get(spec.key) if device_class == "enum" else None,
        expires=expires, link_independent=link_independent,
    )


def elements(spec: QuantitySpec, count: int, *, source: str) -> list[Entity]:
    """Cell N voltage, temperature N, ...: one entity per element, 1-based, key `<key>_<n>`."""
    assert spec.element_name, spec.key
    return [sensor(spec, source=source, key=f"{spec.key}_{n}", name=spec.element_name.format(n=n).capitalize())
            for n in range(1, count + 1)]


def switch_key(name: str) -> str:
    return f"switch_{name}"


@dataclass(frozen=True, slots=True)
class PackFacts:
    """What the bridge knows about one BMS that decides its entities."""

    quantities: frozenset[str]
    writable_switches: tuple[str, ...] = ()
    readonly_switches: tuple[str, ...] = ()  # declared not writable, or seen in samples only
    cells: int | None = None
    temperatures: int | None = None
    state_keys: frozenset[str] = frozenset()  # non-null keys of the pack's BatteryState
    rssi: bool = False


@dataclass(frozen=True, slots=True)
class GroupFacts:
    state_keys: frozenset[str]
    temperatures: int | None = None


@dataclass(slots=True)
class _Builder:
    out: list[Entity] = field(default_factory=list)

    def add(self, *entities: Entity) -> None:
        seen = {e.key for e in self.out}
        for e in entities:
            if e.key not in seen:
                self.out.append(e)
                seen.add(e.key)


def _meter_button() -> Entity:
    return Entity(key="reset_meters", platform="button", name="Reset meters", source=None, category="config",
                  command="button/reset_meters")


def _state_entities(b: _Builder, keys: Iterable[str], temperatures: int | None) -> None:
    """Entities for BatteryState keys, in the model's field order; unknown keys are ignored."""
    keys = set(keys)
    for key in BatteryState.model_fields:
        if key not in keys or key in ("id", "kind", "ts", "members", "stale", "schema_version"):
            continue
        spec = LOCAL.get(key) or CATALOG.get(key)
        if spec is None:
            continue
        if spec.shape is Shape.PER_SENSOR:
            if temperatures:
                b.add(*elements(spec, temperatures, source=STATE))
            continue
        if spec.shape is not Shape.SCALAR:
            continue
        b.add(sensor(spec, source=STATE))
        if key == "power":
            b.add(sensor(LOCAL["power_flow"], source=STATE))
        if key == "cell_min" and "cell_min_index" in keys:
            b.add(sensor(LOCAL["cell_min_index"], source=STATE))
        if key == "cell_max" and "cell_max_index" in keys:
            b.add(sensor(LOCAL["cell_max_index"], source=STATE))


def pack_entities(f: PackFacts) -> list[Entity]:
    q = f.quantities
    b = _Builder()
    for spec in SAMPLE_QUANTITIES:
        if spec.key not in q:
            continue
        if spec.shape is Shape.SCALAR:
            b.add(sensor(spec, source=SAMPLE))
            if spec.key == "power":
                b.add(sensor(LOCAL["power_flow"], source=SAMPLE))
            if spec.key in ("capacity", "charge") and "current" in q and "charge" in q:
                b.add(sensor(LOCAL["time_to_empty"], source=SAMPLE))
                if "capacity" in q or "design_capacity" in q:
                    b.add(sensor(LOCAL["time_to_full"], source=SAMPLE))
            if spec.key == "problem_code":
                b.add(_problem())
        elif spec.shape is Shape.PER_CELL:
            if spec.key == "cell_voltages":
                b.add(*(sensor(spec_of(k), source=SAMPLE) for k in CELL_STAT_KEYS))
            if f.cells:
                b.add(*elements(spec, f.cells, source=SAMPLE))
        elif spec.shape is Shape.PER_SENSOR:
            if f.temperatures:
                b.add(*elements(spec, f.temperatures, source=SAMPLE))
        elif spec.shape is Shape.INDICES:  # balancing
            b.add(Entity(key=spec.key, platform="binary_sensor", name=name_of(spec.key), source=SAMPLE,
                         category="diagnostic"))
        elif spec.shape is Shape.LABELS:  # alarms
            b.add(_problem(), sensor(spec, source=SAMPLE))
        elif spec.shape is Shape.MAPPING:  # switches
            for name in f.writable_switches:
                b.add(Entity(key=switch_key(name), platform="switch", name=f"{name.replace('_', ' ').capitalize()}",
                             source=SAMPLE, category="config", expires=False, command=f"switch/{name}"))
            for name in f.readonly_switches:
                if name not in f.writable_switches:
                    b.add(Entity(key=switch_key(name), platform="binary_sensor",
                                 name=f"{name.replace('_', ' ').capitalize()}", source=SAMPLE, device_class="power",
                                 category="diagnostic"))
    # Aggregator values of this pack (meters, and whatever else it adds) not already derived from samples.
    _state_entities(b, f.state_keys - {k for k in CELL_STAT_KEYS if "cell_voltages" in q}, None)
    if f.state_keys & METER_KEYS:
        b.add(_meter_button())
    # Link diagnostics stay available while the link is down: that is when they matter.
    b.add(sensor(LOCAL["link_state"], source=DIAG, expires=False, link_independent=True),
          sensor(LOCAL["last_error"], source=DIAG, expires=False, link_independent=True))
    if f.rssi:
        b.add(sensor(LOCAL["rssi"], source=DIAG, expires=False, link_independent=True))
    if f.writable_switches:
        b.add(sensor(LOCAL["last_command"], source=DIAG, expires=False, link_independent=True))
    return b.out


def _problem() -> Entity:
    return Entity(key="problem", platform="binary_sensor", name="Problem", source=SAMPLE, device_class="problem")


def group_entities(f: GroupFacts) -> list[Entity]:
    b = _Builder()
    _state_entities(b, f.state_keys, f.temperatures)
    if "current" in f.state_keys and "charge" in f.state_keys:
        b.add(sensor(LOCAL["time_to_empty"], source=STATE))
        if "capacity" in f.state_keys:
            b.add(sensor(LOCAL["time_to_full"], source=STATE))
    if f.state_keys & METER_KEYS:
        b.add(_meter_button())
    return b.out
