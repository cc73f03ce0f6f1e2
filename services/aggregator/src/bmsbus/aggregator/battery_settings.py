"""The settings that apply to one pack or group, and the checks a runtime change must pass.

Three layers, the later one winning key by key:

    aggregator.charge_control  ⊕  aggregator.charge_control_overrides[<id>]  ⊕  runtime changes

Runtime changes arrive on `battery/<id>/settings/set` (keys: `bmsbus.shared.settings.SETTINGS`); a null
returns a key to the config layers. What the keys mean here:

- `max_cell_voltage`, `float_cell_voltage`, `max_charge_current`, `max_discharge_current`: the pack's
  ChargeControlConfig fields of the same name. For a group only the two currents, as a cap on the group's
  CCL/DCL (its CVL and curves follow its members; set those on the members).
- `charge_control`: `auto` (the state machine), `bulk` / `float` (hold that state; packs only), `off` (no
  limits published: battery/<id>/control says mode "Off" and carries no CVL/CCL/DCL).
- `soc_charge_stop`, `soc_charge_start`: the batmon-style SoC window (socwindow.py). A battery with an
  `algorithm` has one from the config; a battery without gets one once both keys are set at run time, and
  loses it when both are reset. Changed at run time, start must be below stop.

Pure: no clock, no I/O. `resolve` raises ValueError naming what is wrong, so the same function validates
a request and builds what applies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from bmsbus.shared.config import ChargeControlConfig
from bmsbus.shared.settings import SETTING_SPECS

from .control import CONFIGURED_MAXIMUM, Curves
from .socwindow import DEFAULT_INTERVAL_H, SocWindowSpec

CURRENT_KEYS: Final = ("max_charge_current", "max_discharge_current")
VOLTAGE_KEYS: Final = ("max_cell_voltage", "float_cell_voltage")
SOC_KEYS: Final = ("soc_charge_stop", "soc_charge_start")
CHARGE_CONTROL: Final = "charge_control"
GROUP_KEYS: Final = frozenset(key for key, spec in SETTING_SPECS.items() if spec.for_groups)
GROUP_MODES: Final = SETTING_SPECS[CHARGE_CONTROL].options_for(group=True) or ()  # bulk/float: a pack's own
GROUP_OVERRIDE_FIELDS: Final = frozenset({"enabled", *CURRENT_KEYS})
HOLDS: Final = ("bulk", "float")
SET_AT_RUN_TIME: Final = " (set at run time)"

Runtime = dict[str, float | str]


@dataclass(frozen=True, slots=True)
class Effective:
    """What applies to one pack or group now."""

    is_group: bool
    cc: ChargeControlConfig
    curves: Curves
    mode: str  # auto | bulk | float | off
    window: SocWindowSpec | None
    runtime: Mapping[str, float | str]  # the keys changed at run time, and their values
    # Group only: the current caps given explicitly (config override or run time). Without one a group's
    # maximum is what its members allow, and nothing is capped.
    caps: Mapping[str, float] = field(default_factory=dict)
    hold: str | None = field(init=False)  # bulk or float while charge_control holds one
    max_reasons: tuple[str, str] = field(init=False)  # (charge, discharge): what a limit at the maximum says

    def __post_init__(self) -> None:
        # Derived once here, not per sample.
        object.__setattr__(self, "hold", self.mode if self.mode in HOLDS else None)
        object.__setattr__(self, "max_reasons", (self.max_reason("max_charge_current"),
                                                 self.max_reason("max_discharge_current")))

    def max_reason(self, key: str) -> str:
        """The reason a limit at this maximum carries: where the number comes from."""
        base = f"{CONFIGURED_MAXIMUM} of the group" if self.is_group else CONFIGURED_MAXIMUM
        return base + (SET_AT_RUN_TIME if key in self.runtime else "")


def resolve(*, is_group: bool, base: ChargeControlConfig, base_curves: Curves, override: Mapping[str, Any],
            runtime: Mapping[str, float | str], config_window: SocWindowSpec | None) -> Effective:
    """The settings that apply, or ValueError naming the first inconsistency."""
    charge_keys = CURRENT_KEYS if is_group else (*VOLTAGE_KEYS, *CURRENT_KEYS)
    changed = {**override, **{k: v for k, v in runtime.items() if k in charge_keys}}
    if changed:
        try:
            cc = ChargeControlConfig.model_validate({**base.model_dump(), **changed})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    else:
        cc = base
    if not is_group and not cc.min_cell_voltage < cc.float_cell_voltage <= cc.max_cell_voltage:
        raise ValueError(f"need min_cell_voltage ({cc.min_cell_voltage:g} V) < float_cell_voltage "
                         f"({cc.float_cell_voltage:g} V) <= max_cell_voltage ({cc.max_cell_voltage:g} V)")
    # Curves only depend on fields an override may change; settings never touch them.
    curves = base_curves if not any(k.endswith("_curve") or k == "curve_mode" for k in override) else Curves.of(cc)
    caps = {k: float(getattr(cc, k)) for k in CURRENT_KEYS if is_group and (k in override or k in runtime)}
    mode = str(runtime.get(CHARGE_CONTROL, "auto"))
    return Effective(is_group, cc, curves, mode, _window(config_window, runtime), dict(runtime), caps)


def _window(config: SocWindowSpec | None, runtime: Mapping[str, float | str]) -> SocWindowSpec | None:
    stop_set, start_set = runtime.get("soc_charge_stop"), runtime.get("soc_charge_start")
    if stop_set is None and start_set is None:
        return config
    stop = float(stop_set) if stop_set is not None else (config.stop if config else None)
    start = float(start_set) if start_set is not None else (config.start if config else None)
    if stop is None or start is None:
        raise ValueError("soc_charge_stop and soc_charge_start: this battery has no SoC window in the config "
                         "(`algorithm`), so set both")
    if not start < stop:
        raise ValueError(f"soc_charge_start ({start:g} %) must be below soc_charge_stop ({stop:g} %)")
    return SocWindowSpec(stop, start, config.interval_s if config else DEFAULT_INTERVAL_H * 3600.0)


def changes_of(request: Mapping[str, float | str | None], effective: Effective) -> tuple[dict[str, Any], list[str]]:
    """The validated changes of a request ({key: value, or None to reset}) and every problem found."""
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key, value in request.items():
        spec = SETTING_SPECS.get(key)
        if spec is None:
            problems.append(f"{key}: unknown setting; known: {sorted(SETTING_SPECS)}")
            continue
        if effective.is_group and key not in GROUP_KEYS:
            problems.append(f"{key}: a group's charge voltage follows its members; set it on each member")
            continue
        if key not in SOC_KEYS and not effective.cc.enabled:
            problems.append(f"{key}: charge control is disabled for this battery (charge_control.enabled)")
            continue
        if value is None:
            changes[key] = None
            continue
        try:
            changes[key] = spec.validate(value)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if key == CHARGE_CONTROL and effective.is_group and value not in GROUP_MODES:
            problems.append(f"{key}: a group takes {list(GROUP_MODES)}; hold bulk or float on its members")
    return changes, problems


def apply_changes(runtime: Mapping[str, float | str], changes: Mapping[str, Any]) -> Runtime:
    out = dict(runtime)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def values_of(e: Effective, group_maxima: Mapping[str, float] | None = None) -> dict[str, float | str]:
    """The values SettingsState carries: every key that means something for this battery.
    `group_maxima`: for a group without an explicit cap, what its members allow (shown, never applied)."""
    out: dict[str, float | str] = {}
    if e.window is not None:
        out["soc_charge_stop"], out["soc_charge_start"] = e.window.stop, e.window.start
    if not e.cc.enabled:
        return out
    if not e.is_group:
        for key in VOLTAGE_KEYS:
            out[key] = float(getattr(e.cc, key))
    for key in CURRENT_KEYS:
        if not e.is_group or key in e.caps:
            out[key] = float(getattr(e.cc, key))
        elif group_maxima and key in group_maxima:
            out[key] = group_maxima[key]
    out[CHARGE_CONTROL] = e.mode
    return out


class BatterySettings:
    """The config layers of every pack and group, the runtime changes (persisted), and what applies."""

    def __init__(self, base: ChargeControlConfig, overrides: Mapping[str, Mapping[str, Any]],
                 config_windows: Mapping[str, SocWindowSpec], groups: set[str]) -> None:
        self.base = base
        self.base_curves = Curves.of(base)
        self.overrides = overrides
        self.config_windows = config_windows
        self.groups = groups
        self.runtime: dict[str, Runtime] = {}
        self._effective: dict[str, Effective] = {}

    def of(self, id: str) -> Effective:
        e = self._effective.get(id)
        if e is None:
            e = self._effective[id] = self.resolve(id, self.runtime.get(id, {}))
        return e

    def resolve(self, id: str, runtime: Mapping[str, float | str]) -> Effective:
        return resolve(is_group=id in self.groups, base=self.base, base_curves=self.base_curves,
                       override=self.overrides.get(id, {}), runtime=runtime, config_window=self.config_windows.get(id))

    def set(self, id: str, runtime: Runtime, effective: Effective) -> None:
        if runtime:
            self.runtime[id] = runtime
        else:
            self.runtime.pop(id, None)
        self._effective[id] = effective

    def dump(self) -> dict[str, Runtime]:
        return {id: dict(r) for id, r in self.runtime.items()}

    def load(self, d: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """Restore runtime changes; returns the ids whose changes no longer fit the config (dropped, with why)."""
        dropped = []
        for id, runtime in d.items():
            try:
                valid = {k: SETTING_SPECS[k].validate(v) for k, v in runtime.items()}
                self.set(id, valid, self.resolve(id, valid))
            except (KeyError, ValueError) as exc:
                dropped.append(f"{id}: {exc}")
        return dropped


class AppliedRequests:
    """Ids of requests already applied, each kept until it expires (after that a repeat is refused as expired
    anyway), so a request is applied at most once, also across a restart (persisted with the state)."""

    def __init__(self, limit: int = 1000) -> None:
        self.expiry: dict[str, float] = {}  # "<kind>/<battery>/<id>" -> expires
        self.limit = limit

    @staticmethod
    def key(kind: str, battery: str, id: str) -> str:
        return f"{kind}/{battery}/{id}"

    def __contains__(self, key: str) -> bool:
        return key in self.expiry

    def add(self, key: str, expires: float, now: float) -> None:
        for k in [k for k, exp in self.expiry.items() if exp < now]:
            del self.expiry[k]
        self.expiry[key] = expires
        while len(self.expiry) > self.limit:
            del self.expiry[next(iter(self.expiry))]

    def dump(self) -> dict[str, float]:
        return dict(self.expiry)

    def load(self, d: Mapping[str, float]) -> None:
        self.expiry.update({str(k): float(v) for k, v in d.items()})
