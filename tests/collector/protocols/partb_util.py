"""Helpers shared by the Supervolt, SOK, LiTime, Victron, noname Modbus, Basen and PACE codec tests; vector
loading: vectors_util.py."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable
from typing import Any

from vectors_util import VECTORS, aio, batmon, hexes, load, split_frames  # noqa: F401 - re-exported for the tests

from bmsbus.collector.codec import CodecError, Frame, drain
from bmsbus.collector.driver import Driver, DriverOptions
from bmsbus.collector.emulation.base import PackState
from bmsbus.collector.links.emulated import EmulatedLink



def chunks_of(entry: dict[str, Any]) -> list[bytes]:
    return hexes(entry, skip_empty=True)


frames = split_frames  # the frames and CodecErrors of `chunks`, in order


def raws(asm: Any, chunks: Iterable[bytes]) -> list[bytes]:
    return [f.raw for f in frames(asm, chunks)[0]]


def split(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)] or [b""]


CHUNKINGS: dict[str, Callable[[bytes], list[bytes]]] = {
    "whole": lambda b: [b],
    "1B": lambda b: split(b, 1),
    "mtu20": lambda b: split(b, 20),
    "junk": lambda b: [b"\x11\x22junk\x5a", b],
    "twice": lambda b: [b + b],
}


def check_chunkings(new_asm: Callable[[], Any], wire: bytes) -> None:
    """Every chunking of `wire` gives the same frames (twice for "twice"); only CodecErrors besides."""
    want = raws(new_asm(), [wire])
    assert want, "the wire bytes hold no frame"
    for name, chunker in CHUNKINGS.items():
        got = raws(new_asm(), chunker(wire))
        assert got == (want * 2 if name == "twice" else want), name


def check_prefixes(new_asm: Callable[[], Any], frame: bytes) -> None:
    """Every strict prefix of a valid frame is "need more data": None, no error."""
    for n in range(len(frame)):
        asm = new_asm()
        asm.feed(frame[:n])
        assert asm.next_frame() is None, n


def expect_error(new_asm: Callable[[], Any], data: bytes, error: type[CodecError], then_frames: int = 0) -> None:
    """The first thing the assembler reports for `data` is exactly `error`; then `then_frames` good frames."""
    got, errors = frames(new_asm(), [data])
    assert len(got) == then_frames
    assert errors and type(errors[0]) is error, errors


def garbage(new_asm: Callable[[], Any], data: bytes, seed: int = 0) -> list[Frame]:
    """Random chunking of arbitrary bytes: only frames or CodecError, and the buffer stays bounded."""
    rng = random.Random(seed)
    asm = new_asm()
    out: list[Frame] = []
    i = 0
    while i < len(data):
        n = rng.randint(1, 40)
        for item in drain(asm, data[i : i + n]):
            if not isinstance(item, CodecError):
                out.append(item)
        i += n
        if hasattr(asm, "pending"):
            assert asm.pending <= asm.MAX_PENDING
    with contextlib.suppress(CodecError):
        if hasattr(asm, "finish"):
            asm.finish()
    return out


async def read_over_link(driver_cls: type[Driver], emulator: Any, options: dict[str, Any] | None = None,
                         link_cls: type[EmulatedLink] = EmulatedLink, mtu: int | None = 20,
                         reads: int = 1, timeout: float = 3.0) -> tuple[Any, list[dict[str, Any]]]:
    async with link_cls(emulator, mtu=mtu, tick_period=0.05) as link:
        driver = driver_cls(link, DriverOptions(request_timeout=timeout, options=options or {}))
        info = await driver.open()
        out = [await driver.read() for _ in range(reads)]
    return info, out


def record_writes(emulator: Any) -> Any:
    """The emulator, keeping every write it receives in `emulator.received` (what the driver sent)."""
    emulator.received = []
    answer = emulator.receive

    def receive(data: bytes) -> list[bytes]:
        emulator.received.append(bytes(data))
        return answer(data)

    emulator.receive = receive
    return emulator


def approx_reading(got: dict[str, Any], want: dict[str, Any], tol: float = 1e-6) -> None:
    for key, w in want.items():
        assert key in got, key
        g = got[key]
        if isinstance(w, list) and w and isinstance(w[0], float):
            assert len(g) == len(w), key
            assert all(abs(a - b) <= tol for a, b in zip(g, w, strict=True)), (key, g, w)
        elif isinstance(w, float):
            assert abs(g - w) <= tol, (key, g, w)
        else:
            assert g == w, (key, g, w)


def quantized_state(cells: list[int], current_cent: int, temps: list[int], soc: int, **extra: Any) -> PackState:
    """A PackState whose values sit on the wire grid (mV, 10 mA, whole °C, whole %)."""
    s = PackState(cell_voltages=[mv / 1000 for mv in cells], current=current_cent / 100,
                  temperatures=[float(t) for t in temps], soc=float(soc))
    for k, v in extra.items():
        setattr(s, k, v)
    return s
