"""`bmsbus decode` and `bmsbus simulate --pty` (tools.py), with the JK protocols as the worked example."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from bmsbus.collector import tools
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.links.serial import SerialLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.jk import uart
from bmsbus.collector.protocols.jk.driver import JkPbBus, JkUartDriver


def test_decode_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc = tools.main(["decode", "jk", "41540d0a aa5590eb", "c8:01:01:00:00:00:00:00:00:00:00:00:00:00:00:44"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == [{"frame_type": "ack", "command": 200, "length": 1, "value": 1}]
    assert tools.main(["decode", "jk_uart", uart.REQUEST_READ_ALL.hex()]) == 0
    assert json.loads(capsys.readouterr().out)[0]["frame_type"] == 6


def test_decode_command_rejects_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert tools.main(["decode", "no_such_bms", "00"]) == 2
    assert "unknown BMS type" in capsys.readouterr().err
    assert tools.main(["decode", "jk", "zz"]) == 2
    assert "not hex" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(n for n, e in REGISTRY.items() if e.decode is not None))
def test_decode_is_generic_and_json_able(name: str) -> None:
    out = tools.decode_chunks(name, [b"\x00\x01garbage", b"\xff" * 30])
    assert isinstance(out, list)
    json.dumps(out, allow_nan=False)


def test_simulate_refuses_protocols_without_a_serial_emulator() -> None:
    with pytest.raises(ValueError, match="no serial link"):
        tools.build_emulator("jk")


async def _simulator(*args: str) -> AsyncIterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "bmsbus.collector.tools", "simulate", *args, "--pty"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        path = await asyncio.to_thread(proc.stdout.readline)
        assert path.startswith("/dev/"), proc.stderr.read() if proc.stderr else ""
        yield path.strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0  # a clean stop on SIGTERM


@pytest.fixture
async def uart_pty() -> AsyncIterator[str]:
    async for path in _simulator("jk_uart", "--cells", "13", "--chemistry", "nmc", "--static"):
        yield path


async def test_simulate_jk_uart_over_a_pty(uart_pty: str) -> None:
    async with SerialLink(uart_pty, REGISTRY["jk_uart"].serial) as link:  # type: ignore[arg-type]
        drv = JkUartDriver(link, DriverOptions(request_timeout=3.0))
        info = await drv.open()
        assert info.sw_version
        r = await drv.read()
        assert len(r["cell_voltages"]) == 13 and all(3.0 < v < 4.3 for v in r["cell_voltages"])
        await drv.set_switch("discharge", False)
        assert (await drv.read())["switches"]["discharge"] is False


async def test_simulate_jk_pb_bus_over_a_pty() -> None:
    async for path in _simulator("jk_pb", "--slaves", "3", "--cells", "8"):
        async with SerialLink(path, REGISTRY["jk_pb"].serial) as link:  # type: ignore[arg-type]
            bus = JkPbBus(link, (1, 2, 3), master_timeout=0.3, idle_gap=0.05, cell_interval=0.3)
            names: set[str | None] = set()
            async with asyncio.timeout(10):
                async for sample in bus.samples():
                    assert len(sample.reading["cell_voltages"]) == 8
                    names.add(sample.device_name)
                    if len(names) == 3:
                        break
            assert names == {"pack-1", "pack-2", "pack-3"}


def test_pty_helper_is_raw() -> None:
    master, slave, path = tools.open_pty()
    try:
        os.write(slave, b"\r\n\x00\x11\x13")
        assert os.read(master, 16) == b"\r\n\x00\x11\x13"
        assert path.startswith("/dev/")
    finally:
        os.close(master)
        os.close(slave)
