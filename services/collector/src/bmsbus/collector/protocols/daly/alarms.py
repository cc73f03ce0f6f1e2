"""Daly failure flags, shared by the A5 protocol (0x98 data bytes 0..6) and D2 (registers 0x3A..0x3C).

Daly's protocol documents (V1.0/V1.2) and syssi/esphome-daly-bms name the same groups in both
protocols. Level 1 is a warning (`*_warning`), level 2 the protection itself (no suffix), which
keeps the names in line with the other families (`cell_overvoltage` = the protection is active).
"""

from __future__ import annotations

from ..fields import bits_set

# FAILURE_BYTES[n][bit]: the alarm of bit `bit` of A5 0x98 data byte n. None = reserved.
FAILURE_BYTES: tuple[tuple[str | None, ...], ...] = (
    ("cell_overvoltage_warning", "cell_overvoltage", "cell_undervoltage_warning", "cell_undervoltage",
     "pack_overvoltage_warning", "pack_overvoltage", "pack_undervoltage_warning", "pack_undervoltage"),
    ("charge_overtemperature_warning", "charge_overtemperature", "charge_undertemperature_warning",
     "charge_undertemperature", "discharge_overtemperature_warning", "discharge_overtemperature",
     "discharge_undertemperature_warning", "discharge_undertemperature"),
    ("charge_overcurrent_warning", "charge_overcurrent", "discharge_overcurrent_warning", "discharge_overcurrent",
     "soc_high_warning", "soc_high", "soc_low_warning", "soc_low"),
    ("cell_voltage_difference_warning", "cell_voltage_difference", "temperature_difference_warning",
     "temperature_difference", None, None, None, None),
    ("charge_mos_overtemperature", "discharge_mos_overtemperature", "charge_mos_temperature_sensor_fault",
     "discharge_mos_temperature_sensor_fault", "charge_mos_stuck_closed", "discharge_mos_stuck_closed",
     "charge_mos_open_circuit", "discharge_mos_open_circuit"),
    ("afe_fault", "cell_voltage_wire_disconnected", "temperature_sensor_fault", "eeprom_fault", "rtc_fault",
     "precharge_failed", "communication_fault", "internal_communication_fault"),
    ("current_sensor_fault", "pack_voltage_sensor_fault", "short_circuit", "low_voltage_charge_forbidden",
     None, None, None, None),
)

ALARM_CODES: frozenset[str] = frozenset(name for group in FAILURE_BYTES for name in group if name)


def failure_alarms(groups: bytes | bytearray) -> list[str]:
    """Named alarms of failure bytes in A5 order (byte 0 = cell/pack voltage, ...). Reserved bits
    are not named (the raw bits stay visible in problem_code)."""
    out: list[str] = []
    for byte, names in zip(groups, FAILURE_BYTES, strict=False):
        out.extend(name for bit in bits_set(byte, 8) if (name := names[bit]))
    return out
