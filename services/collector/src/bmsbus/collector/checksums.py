"""Checksums used by BMS protocols, as plain functions (test vectors in tests/collector/test_checksums.py)."""

from __future__ import annotations


def sum8(data: bytes) -> int:
    return sum(data) & 0xFF


def sum16(data: bytes) -> int:
    return sum(data) & 0xFFFF


def jbd_complement(data: bytes) -> int:
    """JBD 16-bit complement: (0x10000 - sum) & 0xFFFF, sent big-endian."""
    return (0x10000 - sum(data)) & 0xFFFF


def _crc16_modbus_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_MODBUS_TABLE = _crc16_modbus_table()


def crc16_modbus(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/MODBUS (reflected 0xA001, init 0xFFFF). Appended low byte first on Modbus RTU."""
    for b in data:
        crc = (crc >> 8) ^ _MODBUS_TABLE[(crc ^ b) & 0xFF]
    return crc


def crc16_xmodem(data: bytes, crc: int = 0) -> int:
    """CRC-16/XMODEM (poly 0x1021, init 0)."""
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def crc8_maxim(data: bytes, crc: int = 0) -> int:
    """CRC-8/MAXIM (Dallas/DOW): reflected poly 0x8C, init 0."""
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc
