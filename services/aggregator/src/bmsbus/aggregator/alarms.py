"""Active alarms: BMS alarm codes made readable, plus the aggregator's own (stale, telemetry lost, ...).

Each alarm remembers since when it is active; a code that disappears is cleared. `update()` reports the
codes that just became active, so a webhook fires once per alarm, not once per sample. Pure.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Words that are not simply capitalised when a snake_case code is turned into text.
_WORDS = {"mos": "MOSFET", "soc": "SoC", "afe": "AFE", "eeprom": "EEPROM", "rtc": "RTC", "ntc": "NTC",
          "ovp": "OVP", "uvp": "UVP", "bms": "BMS"}

# Codes whose generated text would read badly; everything else is derived.
_TEXTS = {
    "cell_voltage_difference": "Cell voltage difference too high",
    "low_voltage_charge_forbidden": "Charging forbidden at this low voltage",
    "stale": "No data",
    "telemetry_lost": "Telemetry lost: charging and discharging blocked",
    "soc_too_low_to_float": "SoC too low to float: the BMS SoC needs a reset",
    "degraded": "Some members are silent and left out",
}


def alarm_text(code: str) -> tuple[str, str]:
    """(human-readable text, severity) of an alarm code such as `charge_overtemperature_warning`."""
    severity = "alarm"
    base = code
    if base.endswith("_warning"):
        base, severity = base[: -len("_warning")], "warning"
    text = _TEXTS.get(base)
    if text is None:
        words = [_WORDS.get(w, w) for w in base.replace("-", "_").split("_") if w]
        text = " ".join(words) if words else code
        text = text[:1].upper() + text[1:]
    if severity == "warning":
        text += " (warning)"
    return text, severity


@dataclass(slots=True)
class Alarm:
    code: str
    text: str
    since: float
    severity: str = "alarm"
    source: str = "bms"


@dataclass(slots=True)
class Alarms:
    active: dict[str, Alarm] = field(default_factory=dict)

    def update(self, source: str, codes: dict[str, str | None], when: float) -> list[Alarm]:
        """Set the active alarms of one source ("bms" or "aggregator") to `codes` ({code: text or None}).
        Returns the alarms that were not active before."""
        new = []
        for code in [c for c, a in self.active.items() if a.source == source and c not in codes]:
            del self.active[code]
        for code, text in codes.items():
            if code in self.active:
                continue
            derived, severity = alarm_text(code)
            alarm = Alarm(code, text or derived, when, severity, source)
            self.active[code] = alarm
            new.append(alarm)
        return new

    def raise_(self, code: str, when: float, text: str | None = None, source: str = "aggregator") -> Alarm | None:
        if code in self.active:
            return None
        derived, severity = alarm_text(code)
        alarm = self.active[code] = Alarm(code, text or derived, when, severity, source)
        return alarm

    def clear(self, code: str) -> bool:
        return self.active.pop(code, None) is not None

    def listing(self) -> list[dict[str, Any]]:
        return [asdict(a) for a in sorted(self.active.values(), key=lambda a: (a.since, a.code))]

    def dump(self) -> list[dict[str, Any]]:
        return self.listing()

    @classmethod
    def load(cls, d: list[dict[str, Any]]) -> Alarms:
        return cls({a["code"]: Alarm(**a) for a in d})
