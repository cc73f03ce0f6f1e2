"""The runtime settings the aggregator keeps per pack and per group, declared once.

A setting is a value a person may change while the system runs (from Home Assistant or any MQTT
client) without editing the config file: the SoC window and the main charge-control targets. The
config gives the starting value; a change arrives on `battery/<id>/settings/set`, is validated against
the spec here, persisted by the aggregator and published retained on `battery/<id>/settings`.
The HA bridge derives its number/select entities from these specs; docs derive their table from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from .quantities import Semantic


@dataclass(frozen=True, kw_only=True, slots=True)
class SettingSpec:
    key: str
    name: str
    description: str
    unit: str | None = None
    semantic: Semantic | None = None
    min: float = 0.0
    max: float = 100.0
    step: float = 1.0
    options: tuple[str, ...] | None = None  # a choice (HA select) instead of a number
    # Groups: whether a group takes this setting at all (the voltage targets follow its members), and for a
    # choice the options a group takes (bulk/float are states of a pack's own charge-control machine).
    for_groups: bool = True
    group_options: tuple[str, ...] | None = None

    def options_for(self, *, group: bool) -> tuple[str, ...] | None:
        """The choices offered for a pack or a group (spec order)."""
        if group and self.options is not None and self.group_options is not None:
            return tuple(o for o in self.options if o in self.group_options)
        return self.options

    def validate(self, value: object) -> float | str:
        """The value as stored, or ValueError naming the setting and what is allowed."""
        if self.options is not None:
            if not isinstance(value, str) or value not in self.options:
                raise ValueError(f"{self.key}: {value!r} is not one of {list(self.options)}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{self.key}: must be a number, got {type(value).__name__}")
        number = float(value)
        if not math.isfinite(number) or not self.min <= number <= self.max:
            raise ValueError(f"{self.key}: {value!r} is outside {self.min:g}..{self.max:g} {self.unit or ''}".rstrip())
        return number


SETTINGS: Final[tuple[SettingSpec, ...]] = (
    SettingSpec(key="soc_charge_stop", name="SoC charge stop", unit="%", semantic=Semantic.SOC,
                description="SoC window: the charge switch turns off at this SoC"),
    SettingSpec(key="soc_charge_start", name="SoC charge start", unit="%", semantic=Semantic.SOC,
                description="SoC window: the charge switch turns on again at or below this SoC"),
    SettingSpec(key="max_cell_voltage", name="Max cell voltage", unit="V", semantic=Semantic.VOLTAGE,
                min=2.0, max=4.4, step=0.005, for_groups=False,
                description="bulk/absorption target per cell (CVL = this × cells)"),
    SettingSpec(key="float_cell_voltage", name="Float cell voltage", unit="V", semantic=Semantic.VOLTAGE,
                min=2.0, max=4.4, step=0.005, for_groups=False, description="float target per cell"),
    SettingSpec(key="max_charge_current", name="Max charge current", unit="A", semantic=Semantic.CURRENT,
                min=0, max=2000, step=1, description="the configured maximum CCL"),
    SettingSpec(key="max_discharge_current", name="Max discharge current", unit="A", semantic=Semantic.CURRENT,
                min=0, max=2000, step=1, description="the configured maximum DCL"),
    SettingSpec(key="charge_control", name="Charge control", options=("auto", "bulk", "float", "off"),
                group_options=("auto", "off"),
                description="auto: the state machine; bulk/float: hold that target; off: publish no limits"),
)

SETTING_SPECS: Final[dict[str, SettingSpec]] = {s.key: s for s in SETTINGS}
