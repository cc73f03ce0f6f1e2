"""batmon-style SoC window on the BMS charge switch: `algorithm: "soc STOP% [START%] [dstop dstart interval_h]"`.

Acts only at trigger points, so a manual override sticks until the next trigger:
1. Calibration first: when more than `interval` has passed since the last one, charge to 100 %: at
   100 % record the time and switch charging off; below, switch it on if it is off; else wait.
2. Charging and SoC >= STOP: stop (switch off if on).
3. Not charging and SoC <= min(START, STOP - 0.2): start (switch on if off).

Pure: `ts` is the sample's source time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_INTERVAL_H = 24 * 14


@dataclass(frozen=True, slots=True)
class SocWindowSpec:
    stop: float
    start: float
    interval_s: float

    @classmethod
    def parse(cls, text: str) -> SocWindowSpec:
        """'soc 90% 80%' -> stop 90, start 80. Raises ValueError naming what is wrong."""
        words = text.split()
        if not words or words[0].lower() != "soc":
            raise ValueError(f"algorithm {text!r}: only 'soc STOP% [START%]' is known")
        try:
            nums = [float(w.rstrip("%")) for w in words[1:]]
        except ValueError:
            raise ValueError(f"algorithm {text!r}: arguments must be numbers like 90%") from None
        if not nums:
            raise ValueError(f"algorithm {text!r}: needs at least the stop SoC, e.g. 'soc 90%'")
        if len(nums) > 5:
            raise ValueError(f"algorithm {text!r}: at most STOP START DISCHARGE_STOP DISCHARGE_START INTERVAL_H")
        stop = nums[0]
        start = nums[1] if len(nums) > 1 else stop
        interval_h = nums[4] if len(nums) > 4 else DEFAULT_INTERVAL_H
        if not (0 < stop <= 100 and 0 <= start <= 100):
            raise ValueError(f"algorithm {text!r}: SoC values must be within 0..100 %")
        if start > stop:
            raise ValueError(f"algorithm {text!r}: START ({start}%) must not be above STOP ({stop}%)")
        if interval_h <= 0:
            raise ValueError(f"algorithm {text!r}: the calibration interval must be positive")
        return cls(stop, start, interval_h * 3600.0)


@dataclass(slots=True)
class SocWindow:
    charging: bool = True
    last_calibration: float | None = None
    calibrating: bool = False

    def evaluate(self, spec: SocWindowSpec, ts: float, soc: float | None,
                 charge_switch: bool | None) -> tuple[bool, str] | None:
        """(switch value, why) when the charge switch should be set now, else None."""
        if soc is None:
            return None
        if self.last_calibration is None:
            self.last_calibration = ts  # the first calibration is due one interval after we started
        if ts - self.last_calibration > spec.interval_s:
            self.calibrating = True
            if soc >= 100.0:
                self.last_calibration = ts
                self.calibrating = False
                if charge_switch is not False:
                    return False, f"SoC calibration done at {soc:.1f} %"
                return None
            if charge_switch is False:
                return True, f"SoC calibration due ({spec.interval_s / 3600:.0f} h since the last): charging to 100 %"
            return None
        self.calibrating = False
        if self.charging and soc >= spec.stop:
            self.charging = False
            if charge_switch is not False:
                return False, f"SoC {soc:.1f} % reached the stop level {spec.stop:g} %"
        elif not self.charging and soc <= min(spec.start, spec.stop - 0.2):
            self.charging = True
            if charge_switch is not True:
                return True, f"SoC {soc:.1f} % fell to the start level {min(spec.start, spec.stop - 0.2):g} %"
        return None

    @property
    def state(self) -> str:
        return "calibrating" if self.calibrating else ("charging" if self.charging else "resting")

    def dump(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def load(cls, d: dict[str, Any]) -> SocWindow:
        return cls(**d)
