"""Helpers shared by the Daly, JBD and ANT codec tests (issue 4, part a); vector loading: vectors_util.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from vectors_util import VECTORS, aio, batmon, hexes, load, proto, split_frames  # noqa: F401 - re-exported for the tests

from bmsbus.collector.codec import Assembler, CodecError, Frame, drain



def split(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


CHUNKINGS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda b: [b],
    "1B": lambda b: split(b, 1),
    "mtu20": lambda b: split(b, 20),
    "leading_junk": lambda b: [b"\x00\x13junk\x01\x02", b],
    "two_in_one": lambda b: [b + b],
}


def assert_chunkings(new_asm: Callable[[], Assembler], wire: bytes) -> None:
    """Every chunking gives the same frames (twice for two_in_one); junk only ever gives CodecErrors."""
    want = [f.raw for f in split_frames(new_asm(), [wire])[0]]
    assert want, "no frame in the wire bytes"
    for name, chunker in CHUNKINGS.items():
        got, errors = split_frames(new_asm(), chunker(wire))
        assert [f.raw for f in got] == (want * 2 if name == "two_in_one" else want), name
        if name != "leading_junk":
            assert not errors, (name, errors)


def assert_prefixes_incomplete(new_asm: Callable[[], Assembler], frame: bytes) -> None:
    for n in range(len(frame)):
        asm = new_asm()
        asm.feed(frame[:n])
        assert asm.next_frame() is None, f"prefix of {n} bytes"


def assert_rejects(new_asm: Callable[[], Assembler], data: bytes, error: type[CodecError]) -> None:
    """The first error the assembler raises for `data` is exactly `error` (not a parent or sibling)."""
    asm = new_asm()
    asm.feed(data)
    with pytest.raises(CodecError) as info:
        while asm.next_frame() is not None:
            pass
        raise AssertionError("no error raised")
    assert type(info.value) is error, info.value


def assert_garbage_safe(new_asm: Callable[[], Assembler], decode: Callable[[list[bytes]], list[dict[str, Any]]],
                        data: bytes) -> None:
    for chunk_size in (1, 7, 20, max(1, len(data))):
        asm = new_asm()
        for chunk in split(data, chunk_size) or [b""]:
            for item in drain(asm, chunk):
                assert isinstance(item, (Frame, CodecError))
    out = decode(split(data, 20))  # the ProtocolEntry.decode function never raises on bytes
    assert all(isinstance(d, dict) for d in out)
