"""The shared Modbus RTU framing (protocols/modbus_rtu.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from parta_util import split_frames

from bmsbus.collector.codec import ChecksumError, FramingError, UnsupportedFrame
from bmsbus.collector.protocols import modbus_rtu as mb


def test_builders_match_known_frames() -> None:
    assert mb.read_request(0xD2, 0, 0x3E).hex() == "d2030000003ed7b9"
    assert mb.read_request(0xD2, 0xA9, 0x20).hex() == "d20300a900208791"
    assert mb.write_single_request(0xD2, 0xA5, 1).hex() == "d20600a500014b8a"
    assert mb.write_single_request(0xD2, 0xA6, 0).hex() == "d20600a600007a4a"
    assert mb.read_reply(0xD2, b"\x00\x01").hex() == "d203020001fc56"


@pytest.mark.parametrize("wire, kind, length", [
    (mb.read_reply(1, bytes(10)), 3, 15),
    (mb.read_reply(1, b"\x12\x34", mb.READ_INPUT), 4, 7),
    (mb.write_single_request(1, 7, 9), 6, 8),
    (mb.exception_reply(1, 3, 2), 0x83, 5),
])
def test_assembler_lengths(wire: bytes, kind: int, length: int) -> None:
    frames, errors = split_frames(mb.ModbusRtuAssembler({1}), [wire[:3], wire[3:], wire])
    assert not errors and [f.kind for f in frames] == [kind, kind] and len(frames[0].raw) == length
    assert frames[0].address == 1


def test_registers_and_exception_code() -> None:
    (frame,), _ = split_frames(mb.ModbusRtuAssembler({1}), [mb.read_reply(1, b"\xab\xcd")])
    assert mb.registers(frame) == b"\xab\xcd" and mb.exception_code(frame) is None
    (echo,), _ = split_frames(mb.ModbusRtuAssembler({1}), [mb.write_single_request(1, 2, 3)])
    with pytest.raises(UnsupportedFrame):
        mb.registers(echo)


def test_errors() -> None:
    asm = mb.ModbusRtuAssembler({1})
    asm.feed(b"\x01\x2b")
    with pytest.raises(FramingError):
        asm.next_frame()
    bad = bytearray(mb.read_reply(1, b"\x00\x01"))
    bad[-1] ^= 1
    asm = mb.ModbusRtuAssembler({1})
    asm.feed(bytes(bad))
    with pytest.raises(ChecksumError):
        asm.next_frame()


def test_request_parser_skips_junk_and_bad_crc() -> None:
    parser = mb.RequestParser({0xD2})
    good = mb.read_request(0xD2, 0x3E, 9)
    bad = good[:-1] + b"\x00"
    reqs = parser.feed(b"\x00\xd2" + bad + good[:5])
    assert reqs == []
    assert parser.feed(good[5:]) == [mb.Request(0xD2, 3, 0x3E, 9)]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 247), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_request_roundtrip(address: int, register: int, value: int) -> None:
    parser = mb.RequestParser({address})
    assert parser.feed(mb.write_single_request(address, register, value)) == [mb.Request(address, 6, register, value)]
    assert parser.feed(mb.read_request(address, register, value)) == [mb.Request(address, 3, register, value)]
