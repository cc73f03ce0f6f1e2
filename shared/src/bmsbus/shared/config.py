"""One YAML config for every service, validated by pydantic.

Every error names the file, the field and what is allowed, on one line each. Secrets (passwords,
tokens, PINs) are SecretStr: they never appear in logs or reprs. Device entries accept batmon-ha's
fields (address, type, alias, pin, adapter, debug, current_calibration, algorithm) so a batmon user's
devices carry over unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, create_model, field_validator,
                      model_validator)
from pydantic.fields import FieldInfo

from .topics import slug

IdStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConfigError(ValueError):
    """A config file that cannot be used. `str()` is one line per problem: `file: field: what is allowed`."""

    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


class TlsConfig(Strict):
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = Field(False, description="skip hostname verification (self-signed test brokers only)")


class MqttConfig(Strict):
    host: str = "localhost"
    port: int = Field(1883, ge=1, le=65535)
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    ack_after_processing: bool = Field(
        True, description="acknowledge a QoS 1 message only after it was handled, so a consumer that dies gets "
        "it again; the embedded broker turns this off (it waits only 5 s for an ack, and stalls deliveries)")

    @classmethod
    def from_url(cls, url: str) -> MqttConfig:
        """mqtt://[user:pass@]host[:port] or mqtts://... (TLS with the system CAs)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL {url!r}: expected mqtt://[user:pass@]host[:port] or mqtts://...")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=SecretStr(unquote(parts.password)) if parts.password else None,
            tls=TlsConfig() if parts.scheme == "mqtts" else None,
        )

    def display(self) -> str:
        """host:port with the user but never the password."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


class DeviceConfig(Strict):
    """One BMS. batmon-ha's field names are accepted as they are."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    type: str
    address: str | None = Field(None, description="BLE MAC or advertised name, serial port path, or proxy target")
    alias: str | None = None
    id: IdStr | None = Field(None, description="stable id on the bus; default: slug of alias or address")
    pin: SecretStr | None = None
    adapter: str | None = None
    debug: bool = False
    current_calibration: float = 1.0
    invert_current: bool = False
    algorithm: str | None = None
    note: str | None = None
    sample_period: float | None = Field(None, gt=0)
    publish_period: float | None = Field(None, gt=0)
    keep_alive: bool = Field(True, description="hold the link; false: connect for each sample and let go "
                             "(frees the BMS for its phone app)")
    transport: Literal["auto", "ble", "esphome", "serial"] = Field(
        "auto", description="auto: serial for a port path (or a protocol without BLE), else BLE on a local adapter; "
        "esphome: through collector.esphome_proxies")
    proxy: str | None = Field(None, description="esphome: pin this device to the proxy with this name")
    capture: bool = Field(False, description="write every received chunk to collector.capture_dir (bug reports)")
    # simulated devices
    protocol: str | None = Field(None, description="simulated: the protocol the emulated BMS speaks")
    cells: int | None = Field(None, ge=1, le=32)
    chemistry: Literal["lfp", "nmc", "lto"] | None = None
    capacity_ah: float | None = Field(None, gt=0)
    soc: float | None = Field(None, ge=0, le=100)
    options: dict[str, Any] = Field(default_factory=dict, description="protocol-specific options")

    @model_validator(mode="after")
    def _derive_id(self) -> DeviceConfig:
        if self.id is None:
            base = self.alias or self.address
            if not base:
                raise ValueError("a device needs an alias, an id or an address")
            self.id = slug(base)
        return self

    @property
    def name(self) -> str:
        return self.alias or self.id or "bms"


class EsphomeProxyConfig(Strict):
    """One ESPHome Bluetooth proxy (its `api:` section: port, encryption key, legacy password)."""

    name: str | None = Field(None, description="label for logs and `devices[].proxy` (default host:port)")
    host: str
    port: int = Field(6053, ge=1, le=65535)
    noise_psk: SecretStr | None = Field(None, description="base64 `api: encryption: key:` of the proxy")
    password: SecretStr | None = None


class HttpConfig(Strict):
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0: every interface)")
    port: int = Field(8180, ge=0, le=65535, description="0: any free port (logged)")


class CollectorConfig(Strict):
    id: IdStr = "collector"
    sample_period: float = Field(1.0, gt=0)
    publish_period: float | None = Field(None, gt=0)
    concurrent_sampling: bool = Field(True, description="false: devices are read one at a time (weak adapters)")
    spool_dir: Path | None = Field(None, description="on-disk spool for samples while the broker is unreachable "
                                   "(default: memory only)")
    spool_max_bytes: int = Field(50_000_000, ge=0, description="spool size; when full the oldest samples go, counted")
    esphome_proxies: list[EsphomeProxyConfig] = Field(default_factory=list)
    capture_dir: Path | None = Field(None, description="folder for raw captures of devices with `capture: true`")
    capture_max_bytes: int = Field(5_000_000, ge=10_000, description="per capture file before it rotates")
    capture_keep: int = Field(3, ge=1, description="rotated capture files kept per device")
    http: HttpConfig | None = Field(None, description="health endpoint: /healthz, /status, /metrics (absent: off)")
    bt_power_cycle: int | None = Field(None, ge=1, description="power-cycle a BLE adapter after this many consecutive "
                                       "failures of one of its devices (null: never)")
    bt_power_cycle_command: list[str] | None = Field(
        None, description="command run for the power cycle, {adapter} filled in (default: bluetoothctl power off/on)")


class GroupConfig(Strict):
    id: IdStr
    name: str | None = None
    members: list[IdStr] = Field(min_length=1)
    topology: Literal["parallel", "series"] = "parallel"
    algorithm: str | None = Field(None, description="batmon-style 'soc STOP% [START%]' acting on every member's "
                                  "charge switch (docs/charge-control.md)")


# --- aggregator: charge control, cell states, alarms (docs/charge-control.md, docs/aggregator.md) ---------

Curve = list[tuple[float, float]]


class ChargeControlConfig(Strict):
    """Per-pack CVL/CCL/DCL. Voltages are per cell (× the pack's cell count); defaults suit LFP."""

    enabled: bool = Field(True, description="compute and publish battery/<id>/control")
    max_charge_current: float = Field(50.0, ge=0, description="A per pack: the configured maximum CCL")
    max_discharge_current: float = Field(60.0, ge=0, description="A per pack: the configured maximum DCL")
    min_cell_voltage: float = Field(2.9, gt=0, description="V: the CVL never goes below this × cells")
    max_cell_voltage: float = Field(3.45, gt=0, description="V: bulk/absorption target per cell")
    float_cell_voltage: float = Field(3.375, gt=0, description="V: float target per cell")
    voltage_drop: float = Field(0.0, ge=0, description="V added to the published CVL (cable drop to the charger)")
    state_machine: bool = Field(True, description="bulk -> absorption -> float -> re-bulk; off: CVL = max × cells")
    float_after: float = Field(900.0, ge=0, description="s in absorption before float")
    float_cell_diff: float = Field(0.010, ge=0, description="V: absorption timing starts at max voltage only with "
                                   "cell delta <= this")
    float_cell_deviation: float = Field(0.003, ge=0, description="V: delta above float_cell_diff + this restarts the "
                                        "absorption timer")
    absorption_tolerance: float = Field(0.5, ge=0, description="V: pack below max - this cancels the absorption timer")
    bulk_soc: float | None = Field(80.0, ge=0, le=100, description="%: re-bulk from float below this SoC (null: off)")
    bulk_cell_diff: float | None = Field(0.080, ge=0, description="V: re-bulk from float at this cell delta (null: off)")
    float_ramp_rate: float = Field(0.001, gt=0, description="V/s: CVL ramp down into float")
    cvl_controller: Literal["penalty", "i", "clipped", "off"] = Field(
        "penalty", description="cell-overvoltage CVL reduction: penalty sum, I-controller, clipped sum, or none")
    cvl_i_factor: float = Field(0.2, gt=0, description="V/V per evaluation, I-controller gain")
    cvl_recovery_hold: float = Field(60.0, ge=0, description="s a reduced CVL is held before it may rise")
    cvl_recovery_rate: float = Field(0.001, ge=0, description="V/s the CVL rises after the hold (0: jump)")
    soc_reset_cell_voltage: float = Field(3.65, gt=0, description="V per cell during a periodic SoC reset charge")
    soc_reset_after_days: float | None = Field(None, gt=0, description="days between SoC reset charges (null: off)")
    curve_mode: Literal["linear", "step"] = Field("linear", description="between curve points: interpolate, or take "
                                                  "the lower of the two bracketing values")
    charge_cell_voltage_curve: Curve | None = Field(
        [(3.375, 1.0), (3.4, 0.25), (3.425, 0.05), (3.45, 0.005), (3.5, 0.0)],
        description="[max cell V, fraction of max_charge_current] (null: off)")
    discharge_cell_voltage_curve: Curve | None = Field(
        [(2.8, 0.0), (2.9, 0.005), (3.0, 0.05), (3.1, 0.25), (3.19, 1.0)],
        description="[min cell V, fraction of max_discharge_current] (null: off)")
    charge_temperature_curve: Curve | None = Field(
        [(0, 0.0), (2, 0.25), (5, 0.5), (10, 1.0), (40, 1.0), (45, 0.5), (50, 0.25), (55, 0.0)],
        description="[°C, fraction], evaluated at the min and the max temperature; the lower wins")
    discharge_temperature_curve: Curve | None = Field(
        [(-10, 0.0), (0, 0.25), (5, 0.5), (10, 1.0), (40, 1.0), (45, 0.5), (50, 0.25), (55, 0.0)],
        description="[°C, fraction], evaluated at the min and the max temperature; the lower wins")
    mos_temperature_curve: Curve | None = Field([(70, 1.0), (80, 0.25), (90, 0.0)],
                                                description="[MOSFET °C, fraction], charge and discharge")
    charge_soc_curve: Curve | None = Field(None, description="[SoC %, fraction], e.g. [[85,1],[90,.5],[95,.2],[98,.1]]")
    discharge_soc_curve: Curve | None = Field(None, description="[SoC %, fraction], e.g. [[5,.1],[10,.2],[15,.5],[20,1]]")
    recalculate_every: float = Field(60.0, ge=0, description="s: a rising current limit is updated at most this often")
    recalculate_on_change: float = Field(0.33, ge=0, description="...unless it rose by at least this fraction")
    recovery_threshold: float = Field(0.015, ge=0, description="fraction of max a limit must exceed to leave 0")
    current_recovery_hold: float = Field(30.0, ge=0, description="s a limit stays at 0 before it may recover")
    current_recovery_rate: float = Field(5.0, ge=0, description="A/s a recovering limit rises (0: jump)")
    telemetry_timeout: float = Field(60.0, gt=0, description="s without a sample before telemetry counts as lost")
    block_on_disconnect: bool = Field(False, description="lost telemetry blocks at once (else see the grace rules)")
    disconnect_grace: float = Field(1800.0, ge=0, description="s limits are kept after telemetry loss, only if the "
                                    "last cells were inside safe_cell_min..safe_cell_max")
    safe_cell_min: float = Field(3.225, gt=0, description="V: lowest last cell that allows the grace period")
    safe_cell_max: float = Field(3.375, gt=0, description="V: highest last cell that allows the grace period")
    switch_fets: bool = Field(False, description="turn the BMS charge/discharge switches off when a limit blocks "
                              "and on when it clears (commands on bms/<id>/cmd)")
    command_ttl: float = Field(30.0, gt=0, description="s until a command the aggregator issues expires")


class _PartialChargeControl(Strict):
    """Base of ChargeControlOverride: null only where the full field allows it (e.g. `bulk_soc: null` = off)."""

    @model_validator(mode="after")
    def _null_only_where_allowed(self) -> _PartialChargeControl:
        for name in self.model_fields_set:
            if getattr(self, name) is None and not _allows_none(ChargeControlConfig.model_fields[name].annotation):
                raise ValueError(f"{name}: may not be null (leave it out to keep the global value)")
        return self


def _allows_none(annotation: Any) -> bool:
    return annotation is None or type(None) in getattr(annotation, "__args__", ())


# Every ChargeControlConfig field, optional and with its own constraints; only the fields given count
# (`model_fields_set`), so an override of one field leaves the others to the global section.
ChargeControlOverride = create_model(
    "ChargeControlOverride", __base__=_PartialChargeControl,
    __doc__="Charge-control fields of one pack or group that differ from `aggregator.charge_control`.",
    **{name: (f.annotation | None, FieldInfo.merge_field_infos(f, default=None))  # type: ignore[misc]
       for name, f in ChargeControlConfig.model_fields.items()})


class WebhookConfig(Strict):
    url: str = Field(pattern=r"^https?://", description="http(s) URL; receives a JSON POST")
    timeout: float = Field(5.0, gt=0, description="s per attempt")
    retries: int = Field(2, ge=0, description="extra attempts after a failure (connection error or 5xx)")
    headers: dict[str, str] = Field(default_factory=dict)


class ActionConfig(Strict):
    """One thing to do on a transition: exactly one of switch, publish, webhook."""

    switch: str | None = Field(None, description="BMS switch to set, e.g. charge, discharge, heater")
    value: bool | None = Field(None, description="the value to set `switch` to")
    publish: str | None = Field(None, description="MQTT topic to publish `payload` to")
    payload: str = Field("{state}", description="payload; {rule} {state} {battery} {value} are filled in")
    retain: bool = False
    webhook: WebhookConfig | None = None

    @model_validator(mode="after")
    def _one(self) -> ActionConfig:
        chosen = [k for k in ("switch", "publish", "webhook") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"an action needs exactly one of switch, publish, webhook (got {chosen or 'none'})")
        if self.switch is not None and self.value is None:
            raise ValueError("a switch action needs `value: true|false`")
        return self


class CellStateConfig(Strict):
    """A low/normal state with hysteresis on one quantity, and what to do on each transition."""

    name: IdStr
    quantity: Literal["cell_min", "cell_max", "cell_delta", "voltage", "soc", "temperature_min",
                      "temperature_max"] = "cell_min"
    low: float = Field(description="enter `low` at or beyond this (below it if low < normal, above it otherwise)")
    normal: float = Field(description="back to `normal` at or beyond this, the other way")
    batteries: list[IdStr] | None = Field(None, description="pack or group ids (default: every pack)")
    on_low: list[ActionConfig] = Field(default_factory=list)
    on_normal: list[ActionConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _hysteresis(self) -> CellStateConfig:
        if self.low == self.normal:
            raise ValueError("low and normal must differ (that difference is the hysteresis)")
        return self


class AlarmsConfig(Strict):
    webhook: WebhookConfig | None = Field(None, description="POSTed once when an alarm becomes active")
    stale: bool = Field(True, description="raise a `stale` alarm for a device silent longer than timeout")


class AggregatorConfig(Strict):
    state_dir: Path = Path("state")
    dt_max: float = Field(60.0, gt=0, description="gaps longer than this (s) are not integrated")
    groups: list[GroupConfig] = Field(default_factory=list)
    timeout: float = Field(120.0, gt=0, description="a device silent longer than this (s) is stale")
    reorder_window: float = Field(2.0, ge=0, description="source-time seconds a sample is held so a late one can "
                                  "still be integrated in order; later ones are dropped and counted")
    publish_interval: float = Field(1.0, gt=0, description="at most one battery/<id>/state per id per this (s)")
    snapshot_interval: float = Field(60.0, gt=0, description="s between state snapshots (the journal covers the rest)")
    fsync_journal: bool = Field(False, description="fsync every journal write: survives power loss, costs I/O")
    charge_control: ChargeControlConfig = Field(default_factory=ChargeControlConfig)
    charge_control_overrides: dict[IdStr, ChargeControlOverride] = Field(  # type: ignore[valid-type]
        default_factory=dict, description="per pack or group id: the `charge_control` fields that differ for it "
        "(a group takes only enabled, max_charge_current, max_discharge_current)")
    cell_states: list[CellStateConfig] = Field(default_factory=list)
    scripts_dir: Path | None = Field(None, description="folder of <name>_low_* / <name>_normal_* executables")
    script_timeout: float = Field(30.0, gt=0, description="s before a script is killed")
    alarms: AlarmsConfig = Field(default_factory=AlarmsConfig)


class HaBridgeConfig(Strict):
    enabled: bool = True
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$",
                                  description="HA's MQTT discovery prefix (MQTT integration options)")
    expire_after: int = Field(120, ge=0, description="s without a value before HA shows a sensor unavailable; 0 = never")
    birth_topic: str = Field("homeassistant/status", pattern=r"^[^#+]+$",
                             description="HA's status topic; `online` there re-sends discovery and states")
    republish_jitter: float = Field(3.0, ge=0, description="max random delay (s) before re-sending after HA's birth")
    command_expiry: float = Field(15.0, gt=0, description="s a command from HA stays valid on the bus")
    remove_stale: bool = Field(True, description="after start, clear our retained discovery of devices that are gone")
    settle_time: float = Field(5.0, ge=0, description="s to collect retained state before removing stale devices")


class InfluxConfig(Strict):
    url: str | None = None
    token: SecretStr | None = None
    org: str = "bmsbus"
    bucket: str = "bmsbus"
    measurement_prefix: str = ""
    batch_size: int = Field(500, ge=1)
    flush_interval: float = Field(2.0, gt=0)


class Config(Strict):
    site: IdStr = "home"
    topic_root: str = "bmsbus/v1"
    mqtt: MqttConfig | None = Field(None, description="absent: `bmsbus stack` starts an embedded broker")
    collector: CollectorConfig = Field(default_factory=CollectorConfig)
    devices: list[DeviceConfig] = Field(default_factory=list)
    aggregator: AggregatorConfig = Field(default_factory=AggregatorConfig)
    ha_bridge: HaBridgeConfig = Field(default_factory=HaBridgeConfig)
    influx: InfluxConfig = Field(default_factory=InfluxConfig)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source_path: Path | None = Field(None, exclude=True)

    @field_validator("topic_root")
    @classmethod
    def _topic_root(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_/-]+", v) or v.startswith("/") or "//" in v:
            raise ValueError("must be topic levels of [A-Za-z0-9_-] separated by '/', without wildcards")
        return v.strip("/")

    @model_validator(mode="after")
    def _unique_ids(self) -> Config:
        seen: dict[str, int] = {}
        for i, d in enumerate(self.devices):
            if d.id in seen:
                raise ValueError(f"devices[{i}] has id {d.id!r}, already used by devices[{seen[d.id]}]; "
                                 "set a distinct `id` or `alias`")
            seen[d.id] = i  # type: ignore[index]
        known = set(seen)
        for g in self.aggregator.groups:
            if g.id in known:
                raise ValueError(f"group id {g.id!r} is also a device id")
            missing = [m for m in g.members if m not in known]
            if missing:
                raise ValueError(f"group {g.id!r} names unknown devices {missing}; known: {sorted(known)}")
        return self



def _format_error(err: dict[str, Any]) -> str:
    loc = ""
    for part in err["loc"]:
        loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling; see docs/configuration.md)"
    elif err["type"] == "literal_error" and "expected" in err.get("ctx", {}):
        msg = f"must be one of {err['ctx']['expected']} (got {err.get('input')!r})"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{loc or '<top level>'}: {msg}"


def parse_config(data: Any, path: str | Path = "<config>") -> Config:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [f"<top level>: must be a mapping of settings, got {type(data).__name__}"])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(path, [_format_error(e) for e in exc.errors()]) from None
    cfg.source_path = Path(path)
    return cfg


def load_config(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(p, [f"cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(p, [f"YAML syntax error at {where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data, p)
