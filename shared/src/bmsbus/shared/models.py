"""pydantic models for every message on the bus. JSON on the wire; each carries `schema_version`.

Consumers ignore fields they do not know (a newer producer may add some) but reject a message whose
schema_version is newer than the one they understand in a breaking way (major version).
Absent values are absent: they are omitted on the wire and `None` here, never NaN.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

SCHEMA_VERSION = 1

Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class BusModel(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, frozen=False)
    schema_version: int = SCHEMA_VERSION
    topic_kind: ClassVar[str] = ""

    @field_validator("schema_version")
    @classmethod
    def _known_major(cls, v: int) -> int:
        if v < 1 or v > SCHEMA_VERSION:
            raise ValueError(f"schema_version {v} is not supported (this bmsbus understands 1..{SCHEMA_VERSION})")
        return v

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        return cls.model_validate_json(payload)


Finite = Annotated[float, Field(allow_inf_nan=False)]


class Sample(BusModel):
    """One reading of one BMS (topic `bms/<bms>/sample`, QoS 1, not retained). SI units, + = charging."""

    topic_kind: ClassVar[str] = "sample"
    bms: Id
    ts: Finite = Field(description="source clock, unix seconds, when the BMS was read")
    boot: str = Field(min_length=1, max_length=64, description="collector boot id")
    seq: int = Field(ge=0, description="per device, strictly increasing within one boot")

    voltage: Finite | None = None
    current: Finite | None = None
    power: Finite | None = None
    soc: Finite | None = Field(default=None, ge=0, le=100)
    soh: Finite | None = Field(default=None, ge=0, le=100)
    charge: Finite | None = None
    capacity: Finite | None = None
    design_capacity: Finite | None = None
    cycles: int | None = Field(default=None, ge=0)
    cycle_charge: Finite | None = None
    energy: Finite | None = None
    cell_voltages: list[Finite] | None = None
    cell_resistances: list[Finite] | None = None
    temperatures: list[Finite] | None = None
    mos_temperature: Finite | None = None
    balance_current: Finite | None = None
    balancing: list[Annotated[int, Field(ge=0)]] | None = None
    switches: dict[str, bool] | None = None
    alarms: list[str] | None = None
    problem_code: int | None = Field(default=None, ge=0)
    uptime: Finite | None = Field(default=None, ge=0)

    def values(self) -> dict[str, Any]:
        """The measured values only (no envelope), absent ones left out."""
        return self.model_dump(exclude_none=True, exclude={"schema_version", "bms", "ts", "boot", "seq"})


class SwitchSpec(BusModel):
    name: str
    writable: bool = True


class BmsSettingSpec(BaseModel):
    """One writable setting of a BMS, as its driver declares it (`Meta.setting_specs`): everything a consumer
    needs to offer it (an HA number: range, step, unit) and to send `Command(action="set_setting",
    setting=<name>, number=<value in unit>)`. The device checks the range again when it writes."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    name: Id
    unit: str | None = Field(default=None, description="SI unit of the value (V, A, ...)")
    min: Finite
    max: Finite
    step: Finite = Field(gt=0, description="resolution the device stores")
    description: str | None = None

    @model_validator(mode="after")
    def _a_range(self) -> BmsSettingSpec:
        if not self.min < self.max:
            raise ValueError(f"{self.name}: min ({self.min:g}) must be below max ({self.max:g})")
        return self


class Meta(BusModel):
    """Device info and capabilities (topic `bms/<bms>/meta`, retained). Consumers derive entities and fields
    from `quantities` (catalog keys the device reports), `switches` and `setting_specs`.

    `settings` (names only) predates `setting_specs` and stays for older consumers: the names of both are the
    same. `setting_values` are the current values of the declared settings as last read from the BMS (after
    a write, and whenever a periodic read finds them changed, the meta is re-published); a setting not read
    yet is absent."""

    topic_kind: ClassVar[str] = "meta"
    bms: Id
    collector: Id
    name: str
    type: str
    protocol: str | None = None
    transport: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    hw_version: str | None = None
    sw_version: str | None = None
    serial: str | None = None
    cell_count: int | None = None
    temperature_count: int | None = None
    quantities: list[str] = Field(default_factory=list)
    switches: list[SwitchSpec] = Field(default_factory=list)
    settings: list[str] = Field(default_factory=list)
    setting_specs: list[BmsSettingSpec] = Field(default_factory=list)
    setting_values: dict[str, Finite] = Field(default_factory=dict)
    extra: dict[str, str] = Field(default_factory=dict)


class Link(BusModel):
    """Link state of one BMS (topic `bms/<bms>/link`, retained)."""

    topic_kind: ClassVar[str] = "link"
    bms: Id
    state: Literal["connecting", "connected", "disconnected", "failed"]
    ok: bool
    ts: Finite
    rssi: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    since: Finite | None = None


class BirthDevice(BusModel):
    bms: Id
    type: str
    name: str
    address: str | None = None


class Birth(BusModel):
    """Inventory of a collector (topic `collector/<collector>/birth`, retained)."""

    topic_kind: ClassVar[str] = "birth"
    collector: Id
    version: str
    boot: str
    started: Finite
    devices: list[BirthDevice]


class Command(BusModel):
    """A command to one BMS (topic `bms/<bms>/cmd`). Executed at most once per id, never after `expires`."""

    topic_kind: ClassVar[str] = "cmd"
    id: str = Field(min_length=1, max_length=64)
    action: Literal["set_switch", "set_setting"] = "set_switch"
    switch: str | None = Field(default=None, description="set_switch: a switch the device declares in its meta")
    value: bool | None = Field(default=None, description="set_switch: on or off")
    setting: str | None = Field(default=None, description="set_setting: a setting the device declares in its meta")
    number: Finite | None = Field(default=None, description="set_setting: the value, in the setting's unit")
    issued: Finite
    expires: Finite
    origin: str | None = None

    @model_validator(mode="after")
    def _fields_of_the_action(self) -> Command:
        if self.action == "set_switch" and (self.switch is None or self.value is None):
            raise ValueError("set_switch needs `switch` and `value`")
        if self.action == "set_setting" and (self.setting is None or self.number is None):
            raise ValueError("set_setting needs `setting` and `number`")
        return self

    @property
    def target(self) -> str:
        """What the command changes, for logs and results: `charge=True`, `cell_ovp=3.65`."""
        return f"{self.switch}={self.value}" if self.action == "set_switch" else f"{self.setting}={self.number:g}"


class CommandResult(BusModel):
    """Outcome of a command (topic `bms/<bms>/cmd/result`)."""

    topic_kind: ClassVar[str] = "cmd_result"
    id: str
    bms: Id
    status: Literal["ok", "rejected", "failed"]
    ts: Finite
    reason: str | None = None
    readback: bool | None = None


class BatteryState(BusModel):
    """Aggregator output per pack and per group (topic `battery/<id>/state`, retained)."""

    topic_kind: ClassVar[str] = "state"
    id: Id
    kind: Literal["pack", "group"]
    ts: Finite | None = Field(default=None, description="source ts of the last sample integrated")
    members: list[str] = Field(default_factory=list)
    voltage: Finite | None = None
    current: Finite | None = None
    power: Finite | None = None
    soc: Finite | None = None
    soh: Finite | None = None
    charge: Finite | None = None
    capacity: Finite | None = None
    cell_min: Finite | None = None
    cell_max: Finite | None = None
    cell_delta: Finite | None = None
    cell_avg: Finite | None = None
    cell_min_index: int | None = None
    cell_max_index: int | None = None
    temperatures: list[Finite] | None = None
    energy_in_kwh: Finite = 0.0
    energy_out_kwh: Finite = 0.0
    energy_net_kwh: Finite = 0.0
    charge_in_ah: Finite = 0.0
    charge_out_ah: Finite = 0.0
    charge_net_ah: Finite = 0.0
    stale: bool = False
    # Added by the aggregator (issue 6); all optional, so older consumers are unaffected.
    mos_temperature: Finite | None = None
    cycles: int | None = Field(default=None, description="the BMS's own cycle counter (mean of members for a group)")
    cycles_soc: Finite | None = Field(default=None, description="½·Σ|ΔSoC|/100, counted by the aggregator")
    cycles_throughput: Finite | None = Field(default=None, description="(charge in + out) / 2 / capacity")
    time_to_empty: Finite | None = Field(default=None, description="s at the present discharge current")
    time_to_full: Finite | None = Field(default=None, description="s at the present charge current")
    cell_min_member: str | None = Field(default=None, description="group: the pack holding cell_min")
    cell_max_member: str | None = Field(default=None, description="group: the pack holding cell_max")
    member_temperatures: dict[str, list[Finite]] | None = Field(default=None, description="group: per pack")
    degraded: bool = Field(default=False, description="group: some members are stale and left out of the sums")
    stale_members: list[str] = Field(default_factory=list)
    alarms: list[ActiveAlarm] = Field(default_factory=list, description="active alarms, oldest first")


class ActiveAlarm(BaseModel):
    """One active alarm of a pack or group: a BMS alarm code made readable, or one the aggregator raises."""

    model_config = ConfigDict(extra="ignore")
    code: str
    text: str
    since: Finite = Field(description="unix time the alarm became active")
    severity: Literal["warning", "alarm"] = "alarm"
    source: Literal["bms", "aggregator"] = "bms"


class Limit(BaseModel):
    """One charge-control output and the rule that set it."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    value: Finite
    reason: str


class Control(BusModel):
    """Charge control of a pack or group (topic `battery/<id>/control`, retained): charge voltage limit (CVL),
    charge and discharge current limits (CCL, DCL), each with the reason that set it, and the charge mode."""

    topic_kind: ClassVar[str] = "control"
    id: Id
    kind: Literal["pack", "group"]
    ts: Finite = Field(description="aggregator clock when computed")
    mode: str = Field(description="Bulk, Absorption, Float Transition, Float, Blocked, ... with suffixes")
    charge_voltage: Limit | None = None
    charge_current: Limit | None = None
    discharge_current: Limit | None = None
    allow_charge: bool = True
    allow_discharge: bool = True
    soc_window: Literal["charging", "resting", "calibrating"] | None = Field(
        default=None, description="batmon-style SoC window state, if an `algorithm` is configured")
    soc_reset_due: bool = False
    last_full_charge: Finite | None = None
    members: dict[str, str] = Field(default_factory=dict, description="group: member -> its mode")


class SettingsState(BusModel):
    """The runtime settings the aggregator keeps for one pack or group (topic `battery/<id>/settings`,
    retained). Keys and ranges: `bmsbus.shared.settings.SETTINGS`; `overridden` lists the keys changed at
    run time (the rest come from the config file)."""

    topic_kind: ClassVar[str] = "settings"
    id: Id
    kind: Literal["pack", "group"] = "pack"
    ts: Finite | None = None
    values: dict[str, Finite | str] = Field(default_factory=dict)
    overridden: list[str] = Field(default_factory=list)


class SettingsRequest(BusModel):
    """Change settings of one pack or group (topic `battery/<id>/settings/set`, not retained). Applied at most
    once per id and never after `expires`; all keys or none (one invalid key rejects the request). A value of
    null returns that key to its configured value. Answered on `battery/<id>/cmd/result`."""

    topic_kind: ClassVar[str] = "settings_set"
    id: str = Field(min_length=1, max_length=64)
    battery: Id | None = None
    settings: dict[str, Finite | str | None] = Field(min_length=1)
    issued: Finite
    expires: Finite
    origin: str | None = None


class MetersReset(BusModel):
    """Reset the computed meters and cycle counters of one pack or group to zero (topic
    `battery/<id>/meters/reset`, not retained). At most once per id, never after `expires`; answered on
    `battery/<id>/cmd/result`."""

    topic_kind: ClassVar[str] = "meters_reset"
    id: str = Field(min_length=1, max_length=64)
    battery: Id | None = None
    issued: Finite
    expires: Finite
    origin: str | None = None


class BadMessage(ValueError):
    """A bus message that could not be parsed: malformed JSON or schema-invalid. Count it, log it, skip it."""


def parse(model: type[BusModel], payload: bytes | str) -> BusModel:
    """Parse a payload into `model`, turning every failure into one BadMessage with a short reason."""
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        kind = "malformed JSON" if first["type"] == "json_invalid" else "invalid"
        raise BadMessage(f"{kind} {model.__name__}: {where}: {first['msg']}") from None


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes for payloads that are not models (e.g. flat HA state topics)."""
    return json.dumps(obj, separators=(",", ":")).encode()
