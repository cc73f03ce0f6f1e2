"""The catalog -> Home Assistant entities. Pure; no I/O.

Every numeric sensor's (device_class, state_class) comes from ONE table, `HA_SENSOR_CLASSES`, keyed by the
catalog's (semantic, kind). There are no name or unit heuristics: a quantity whose (semantic, kind) is not in
the table is a programming error (tests run every catalog entry through it).

A few entities are not bus quantities but things the bridge derives for HA (discharge-positive power, link
diagnostics, the last command's outcome, the readable active alarms, the charge-control outputs). They are
declared here as `QuantitySpec`s of the same shape (`LOCAL`), so they go through the same table; a LOCAL key
never shadows a catalog key. Everything the aggregator computes per pack and group (meters, cell statistics,
computed cycles, time to go) is a catalog quantity (`STATE_QUANTITIES`), not a special case here.

The number/select entities are the aggregator's runtime settings, `bmsbus.shared.settings.SETTINGS` (a group's
select offers only the options a group takes, `SettingSpec.options_for`), and the BMS's own writable settings, one number
per `Meta.setting_specs` entry (key `bms_<name>`, range/step/unit from the spec, state from
`Meta.setting_values`).

Which entities a device gets is decided by what it declares, never by what happened to be non-null once:
- a pack (one BMS): `Meta.quantities` and `Meta.switches`; per-cell and per-sensor entities are expanded by
  the counts in the meta or, if the meta has none, by the lengths in the first sample; meters and other
  aggregator values by the keys of the pack's `BatteryState`; RSSI once a link message carried one.
- a group: the keys of its `BatteryState`;
- settings: the keys the aggregator publishes on `battery/<id>/settings`;
- BMS settings: the pack's `Meta.setting_specs`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from bmsbus.shared.models import BatteryState, BmsSettingSpec
from bmsbus.shared.quantities import CATALOG, SAMPLE_QUANTITIES, STATE_QUANTITIES, Category, Kind, QuantitySpec
from bmsbus.shared.quantities import Semantic as Sem
from bmsbus.shared.quantities import Shape
from bmsbus.shared.settings import SETTINGS as SETTING_LIST
from bmsbus.shared.settings import SettingSpec

# HA-facing state topics (`<root>/ha/<id>/<source>`): one per bus source, so `expire_after` means
# "this source went quiet" and a chatty link topic cannot keep stale sample values alive.
SAMPLE: Final = "sample"  # flattened from bms/<id>/sample (a group: its members' switch states)
STATE: Final = "state"  # flattened from battery/<id>/state
CONTROL: Final = "control"  # flattened from battery/<id>/control
SETTINGS: Final = "settings"  # flattened from battery/<id>/settings
DIAG: Final = "diag"  # flattened from bms/<id>/link plus the last command's outcome
BMS_SETTINGS: Final = "bms_settings"  # flattened from bms/<id>/meta `setting_values` (the BMS's own settings)
SOURCES: Final = (SAMPLE, STATE, CONTROL, SETTINGS, DIAG, BMS_SETTINGS)

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
    (Sem.COUNT, T): (None, "total"),
    (Sem.SIGNAL, M): ("signal_strength", "measurement"),
    (Sem.INDEX, S): (None, None),  # a cell number: shown, no statistics
    (Sem.CODE, S): (None, None),  # raw codes and free text
    (Sem.CODE, E): ("enum", None),  # enum sensors take no state_class, need `options`
}

# Units HA shows differently from the catalog's ASCII spelling.
HA_UNITS: Final[Mapping[str, str]] = {"Ohm": "Ω"}


def _local(key: str, unit: str | None, kind: Kind, semantic: Sem, description: str, **kw: object) -> QuantitySpec:
    return QuantitySpec(key=key, unit=unit, kind=kind, semantic=semantic, description=description,
                        **kw)  # type: ignore[arg-type]


DIAGNOSTIC = Category.DIAGNOSTIC
LINK_STATES: Final = ("connecting", "connected", "disconnected", "failed")

# Bridge-derived values (not bus quantities): same shape, same table.
LOCAL: Final[dict[str, QuantitySpec]] = {q.key: q for q in (
    _local("power_flow", "W", M, Sem.POWER, "Pack power, positive while DISCHARGING (HA power-flow convention)",
           precision=1),
    _local("rssi", "dBm", M, Sem.SIGNAL, "BLE signal strength of the link", precision=0, category=DIAGNOSTIC),
    _local("link_state", None, E, Sem.CODE, "State of the link to the BMS", category=DIAGNOSTIC),
    _local("last_error", None, S, Sem.CODE, "Last link error", category=DIAGNOSTIC),
    _local("last_command", None, S, Sem.CODE,
           "Outcome of the last command sent from HA: a switch, a setting or a meter reset (sent, ok, rejected, "
           "failed, or refused by the bridge with the reason)", category=DIAGNOSTIC),
    # BatteryState.alarms is a list of ActiveAlarm, not the catalog's `alarms` (a sample's alarm codes).
    _local("active_alarms", None, S, Sem.CODE, "Active alarms (aggregator), readable"),
    # Control (charge control outputs)
    _local("charge_voltage", "V", M, Sem.VOLTAGE, "Charge voltage limit (CVL)", precision=2),
    _local("charge_current", "A", M, Sem.CURRENT, "Charge current limit (CCL)", precision=1),
    _local("discharge_current", "A", M, Sem.CURRENT, "Discharge current limit (DCL)", precision=1),
    _local("charge_voltage_reason", None, S, Sem.CODE, "Why the CVL is what it is", category=DIAGNOSTIC),
    _local("charge_current_reason", None, S, Sem.CODE, "Why the CCL is what it is", category=DIAGNOSTIC),
    _local("discharge_current_reason", None, S, Sem.CODE, "Why the DCL is what it is", category=DIAGNOSTIC),
    _local("charge_mode", None, E, Sem.CODE, "Charge mode (base state)"),
    _local("charge_mode_detail", None, S, Sem.CODE, "Charge mode with its suffixes", category=DIAGNOSTIC),
    _local("soc_window", None, E, Sem.CODE, "batmon-style SoC window state"),
)}

# Enum sensors must always carry one of their options: HA versions before 2025 store a literal "None" for a
# non-numeric sensor and then reject it. The state flatteners guarantee a valid option for each of these.
# Control.mode is free text with suffixes ("Absorption (Cell OVP) + Balancing"); the enum is its base state.
CHARGE_MODES: Final = ("bulk", "absorption", "float_transition", "float", "blocked", "other")
ENUM_OPTIONS: Final[Mapping[str, tuple[str, ...]]] = {
    "link_state": LINK_STATES, "charge_mode": CHARGE_MODES, "soc_window": ("charging", "resting", "calibrating", "off")}

# binary sensors that are not catalog quantities: key -> (name, device_class, diagnostic)
BINARY: Final[Mapping[str, tuple[str, str | None, bool]]] = {
    "problem": ("Problem", "problem", False),  # BMS alarms / problem code (sample)
    "alarm": ("Alarm", "problem", False),  # aggregator's active alarms (state)
    "degraded": ("Degraded", "problem", True),  # group: some members stale
    "allow_charge": ("Charge allowed", None, False),
    "allow_discharge": ("Discharge allowed", None, False),
    "soc_reset_due": ("SoC reset due", None, True),
}


# People-facing names (HA prefixes them with the device name). Keys not listed get their key in words.
NAMES: Final[Mapping[str, str]] = {
    "soc": "State of charge", "soh": "State of health", "charge": "Remaining charge", "capacity": "Full capacity",
    "cycle_charge": "Cycle charge", "energy": "Stored energy", "mos_temperature": "MOS temperature",
    "problem_code": "Problem code", "cell_min": "Cell voltage min", "cell_max": "Cell voltage max",
    "cell_delta": "Cell voltage delta", "cell_avg": "Cell voltage average", "cell_min_index": "Lowest cell",
    "cell_max_index": "Highest cell", "energy_in_kwh": "Energy in", "energy_out_kwh": "Energy out",
    "energy_net_kwh": "Energy net", "charge_in_ah": "Charge in", "charge_out_ah": "Charge out",
    "charge_net_ah": "Charge net", "rssi": "Signal strength", "link_state": "Link", "last_error": "Link error",
    "power_flow": "Power flow", "cycles_soc": "Cycles (SoC)", "cycles_throughput": "Cycles (throughput)",
    "cell_min_member": "Lowest cell pack", "cell_max_member": "Highest cell pack",
    "charge_voltage": "Charge voltage limit", "charge_current": "Charge current limit",
    "discharge_current": "Discharge current limit", "charge_voltage_reason": "Charge voltage limit reason",
    "charge_current_reason": "Charge current limit reason",
    "discharge_current_reason": "Discharge current limit reason",
    "soc_window": "SoC window", "charge_mode_detail": "Charge mode detail",
}

# Noisy or rarely wanted entities: present but disabled until the user enables them.
DISABLED_BY_DEFAULT: Final = frozenset({"cell_voltages", "cell_resistances", "rssi", "uptime", "problem_code",
                                        "cycle_charge"})

METER_KEYS: Final = frozenset(q.key for q in STATE_QUANTITIES if q.semantic in (Sem.ENERGY, Sem.CHARGE))
CELL_STAT_KEYS: Final = ("cell_min", "cell_max", "cell_delta", "cell_avg", "cell_min_index", "cell_max_index")
# BatteryState keys that only mean something for a group (a pack's state carries them empty or not at all).
GROUP_ONLY: Final = frozenset({"degraded", "stale_members", "cell_min_member", "cell_max_member"})
# Aggregator values that are null while they do not apply (time to empty while charging or idle): their entity
# exists as soon as the state carries the inputs, so it does not come and go with the sign of the current.
DECLARED_BY_INPUTS: Final[Mapping[str, frozenset[str]]] = {
    "time_to_empty": frozenset({"current", "charge"}),
    "time_to_full": frozenset({"current", "charge", "capacity"}),
}


def name_of(key: str) -> str:
    return NAMES.get(key) or key.replace("_", " ").capitalize()


def spec_of(key: str) -> QuantitySpec:
    return LOCAL.get(key) or CATALOG[key]


assert not LOCAL.keys() & CATALOG.keys(), f"LOCAL shadows catalog keys: {sorted(LOCAL.keys() & CATALOG.keys())}"


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


def binary(key: str, source: str, *, expires: bool = True) -> Entity:
    name, device_class, diagnostic = BINARY[key]
    return Entity(key=key, platform="binary_sensor", name=name, source=source, device_class=device_class,
                  category="diagnostic" if diagnostic else None, expires=expires)


def setting_options(spec: SettingSpec, *, group: bool) -> tuple[str, ...] | None:
    """The options a select offers: the shared spec's, for a group only those a group takes (spec order)."""
    return spec.options_for(group=group)


def setting(spec: SettingSpec, *, group: bool = False) -> Entity:
    """A number (or a select, for a choice) whose range, step and unit are the shared spec's. Its state is the
    aggregator's retained `battery/<id>/settings`: never optimistic, so a refused change leaves it unchanged."""
    if spec.options is not None:
        return Entity(key=spec.key, platform="select", name=spec.name, source=SETTINGS, category="config",
                      options=setting_options(spec, group=group), expires=False, command=f"select/{spec.key}")
    device_class = HA_SENSOR_CLASSES[(spec.semantic, M)][0] if spec.semantic else None
    return Entity(key=spec.key, platform="number", name=spec.name, source=SETTINGS, category="config",
                  device_class=device_class, unit=spec.unit, expires=False, command=f"number/{spec.key}",
                  extra=(("min", spec.min), ("max", spec.max), ("step", spec.step), ("mode", "box")))


# BMS settings: HA number device classes by unit, only where the unit is one HA accepts for that class
# (reference §4: voltage V/mV, current A/mA, power W/kW); any other unit is passed as-is without a class.
NUMBER_DEVICE_CLASSES: Final[Mapping[str, str]] = {"V": "voltage", "mV": "voltage", "A": "current", "mA": "current",
                                                   "W": "power", "kW": "power"}
ACRONYMS: Final = frozenset({"ovp", "uvp", "ocp", "otp", "utp", "scp", "ovpr", "uvpr", "otpr", "utpr", "soc", "mos",
                             "rcv", "rfv"})


def bms_setting_key(name: str) -> str:
    """Entity key of a BMS setting: its own namespace, so a BMS setting never takes the key of an aggregator
    setting of the same name (JK's settings frame has a `max_charge_current` too)."""
    return f"bms_{name}"


def bms_setting_name(name: str) -> str:
    """`cell_ovp` -> `Cell OVP`, `balance_trigger_delta` -> `Balance trigger delta`."""
    words = [w.upper() if w in ACRONYMS else w for w in name.split("_")]
    return " ".join(words)[:1].upper() + " ".join(words)[1:]


def _decimals(step: float) -> int:
    return max(0, -math.floor(math.log10(step) + 1e-9))


def bms_setting(spec: BmsSettingSpec) -> Entity:
    """A number for one setting the BMS declares (`Meta.setting_specs`): range, step and unit from the spec; its
    state is the value last read from the BMS (`Meta.setting_values`), never optimistic."""
    key = bms_setting_key(spec.name)
    return Entity(key=key, platform="number", name=bms_setting_name(spec.name), source=BMS_SETTINGS,
                  category="config", device_class=NUMBER_DEVICE_CLASSES.get(spec.unit or ""), unit=spec.unit,
                  precision=_decimals(spec.step), expires=False, command=f"number/{key}",
                  extra=(("min", spec.min), ("max", spec.max), ("step", spec.step), ("mode", "box")))


def switch_entities(writable: Iterable[str], readonly: Iterable[str] = ()) -> list[Entity]:
    writable = tuple(writable)
    out = [Entity(key=switch_key(n), platform="switch", name=n.replace("_", " ").capitalize(), source=SAMPLE,
                  category="config", expires=False, command=f"switch/{n}") for n in writable]
    out += [Entity(key=switch_key(n), platform="binary_sensor", name=n.replace("_", " ").capitalize(),
                   source=SAMPLE, device_class="power", category="diagnostic")
            for n in readonly if n not in writable]
    return out


@dataclass(frozen=True, slots=True)
class PackFacts:
    """What the bridge knows about one BMS that decides its entities."""

    quantities: frozenset[str]
    writable_switches: tuple[str, ...] = ()
    readonly_switches: tuple[str, ...] = ()  # declared not writable, or seen in samples only
    cells: int | None = None
    temperatures: int | None = None
    state_keys: frozenset[str] = frozenset()  # non-null keys of the pack's BatteryState
    control_keys: frozenset[str] = frozenset()  # non-null keys of its Control
    settings: tuple[str, ...] = ()  # keys the aggregator publishes on battery/<id>/settings
    rssi: bool = False
    bms_settings: tuple[BmsSettingSpec, ...] = ()  # the BMS's own writable settings (Meta.setting_specs)


@dataclass(frozen=True, slots=True)
class GroupFacts:
    state_keys: frozenset[str]
    temperatures: int | None = None
    control_keys: frozenset[str] = frozenset()
    settings: tuple[str, ...] = ()
    writable_switches: tuple[str, ...] = ()  # writable on every member: commands go to battery/<id>/cmd


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


_ENVELOPE: Final = frozenset({"schema_version", "id", "kind", "ts", "members", "stale", "member_temperatures"})


def _state_entities(b: _Builder, keys: Iterable[str], temperatures: int | None, *, group: bool) -> None:
    """Entities for BatteryState keys, in the model's field order, specs from the catalog; keys that are not
    catalog quantities (envelope, member_temperatures) get none."""
    keys = set(keys)
    for key in BatteryState.model_fields:
        inputs = DECLARED_BY_INPUTS.get(key)
        if key in _ENVELOPE or not (key in keys or (inputs is not None and inputs <= keys)):
            continue
        if key in GROUP_ONLY and not group:
            continue
        if key == "alarms":  # list[ActiveAlarm], not the sample's alarm codes
            b.add(binary("alarm", STATE), sensor(LOCAL["active_alarms"], source=STATE))
            continue
        if key == "degraded":
            b.add(binary("degraded", STATE))
            continue
        spec = CATALOG.get(key)
        if spec is None:
            continue
        if spec.shape is Shape.PER_SENSOR:
            if temperatures:
                b.add(*elements(spec, temperatures, source=STATE))
        elif spec.shape in (Shape.SCALAR, Shape.LABELS):
            b.add(sensor(spec, source=STATE))
            if key == "power":
                b.add(sensor(LOCAL["power_flow"], source=STATE))


def _control_entities(b: _Builder, keys: frozenset[str]) -> None:
    """Charge control (battery/<id>/control): limits, reasons, mode. Published on change only: no expire_after."""
    if "mode" in keys:
        b.add(sensor(LOCAL["charge_mode"], source=CONTROL, expires=False),
              sensor(LOCAL["charge_mode_detail"], source=CONTROL, expires=False))
    for limit in ("charge_voltage", "charge_current", "discharge_current"):
        if limit in keys:
            b.add(sensor(LOCAL[limit], source=CONTROL, expires=False),
                  sensor(LOCAL[f"{limit}_reason"], source=CONTROL, expires=False))
    for key in ("allow_charge", "allow_discharge", "soc_reset_due"):
        if key in keys:
            b.add(binary(key, CONTROL, expires=False))
    if "soc_window" in keys:
        b.add(sensor(LOCAL["soc_window"], source=CONTROL, expires=False))


def _settings_entities(b: _Builder, keys: Iterable[str], *, group: bool) -> None:
    """A number/select per setting the aggregator publishes, in the shared declaration's order."""
    keys = set(keys)
    b.add(*(setting(spec, group=group) for spec in SETTING_LIST if spec.key in keys))


def _last_command(b: _Builder, *, link_independent: bool) -> None:
    """The outcome of the last command, for any device HA can control (switches, settings, meter reset)."""
    if any(e.command for e in b.out):
        b.add(sensor(LOCAL["last_command"], source=DIAG, expires=False, link_independent=link_independent))


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
            if spec.key == "problem_code":
                b.add(binary("problem", SAMPLE))
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
            b.add(binary("problem", SAMPLE), sensor(spec, source=SAMPLE))
        elif spec.shape is Shape.MAPPING:  # switches
            b.add(*switch_entities(f.writable_switches, f.readonly_switches))
    # The aggregator's values for this pack, where the samples did not already give them.
    _state_entities(b, f.state_keys - ({*CELL_STAT_KEYS} if "cell_voltages" in q else set()), None, group=False)
    _control_entities(b, f.control_keys)
    _settings_entities(b, f.settings, group=False)
    b.add(*(bms_setting(spec) for spec in f.bms_settings))
    if f.state_keys & METER_KEYS:
        b.add(_meter_button())
    # Link diagnostics stay available while the link is down: that is when they matter.
    b.add(sensor(LOCAL["link_state"], source=DIAG, expires=False, link_independent=True),
          sensor(LOCAL["last_error"], source=DIAG, expires=False, link_independent=True))
    if f.rssi:
        b.add(sensor(LOCAL["rssi"], source=DIAG, expires=False, link_independent=True))
    _last_command(b, link_independent=True)
    return b.out


def group_entities(f: GroupFacts) -> list[Entity]:
    b = _Builder()
    _state_entities(b, f.state_keys, f.temperatures, group=True)
    b.add(*switch_entities(f.writable_switches))
    _control_entities(b, f.control_keys)
    _settings_entities(b, f.settings, group=True)
    if f.state_keys & METER_KEYS:
        b.add(_meter_button())
    _last_command(b, link_independent=False)
    return b.out
