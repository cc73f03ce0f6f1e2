"""SerialLink over pseudo-terminals (the emulator drives the master side) and over a TCP serial gateway."""

from __future__ import annotations

import asyncio
import os
import time
import tty
from pathlib import Path

import pytest

from bmsbus.collector import protocols
from bmsbus.collector.driver import DriverOptions, SerialSpec
from bmsbus.collector.emulation.base import make_pack
from bmsbus.collector.links.base import DeviceNotFound, LinkClosed, LinkError
from bmsbus.collector.links.serial import SerialLink

JK_UART = protocols.get("jk_uart")


class PtyPeer:
    """A USB-serial adapter with a BMS behind it: the emulator answers on the pty master; the collector
    opens a /dev/serial/by-id-style symlink to the slave. `unplug()` closes the pty and removes the
    symlink (the kernel's EIO on the slave is what a yanked USB adapter gives); `replug()` brings a new
    pty up under the same by-id name, as udev does."""

    def __init__(self, by_id_dir: Path, emulator: object, name: str = "usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"):
        self.link_path = by_id_dir / name
        self.emulator = emulator
        self.received = bytearray()
        self.master = self.slave = -1
        self.replug()

    def replug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        if self.link_path.is_symlink():
            self.link_path.unlink()
        self.link_path.symlink_to(os.ttyname(self.slave))
        asyncio.get_running_loop().add_reader(self.master, self._on_read)

    def _on_read(self) -> None:
        try:
            data = os.read(self.master, 4096)
        except OSError:
            asyncio.get_running_loop().remove_reader(self.master)
            return
        self.received += data
        for frame in self.emulator.receive(data):  # type: ignore[attr-defined]
            os.write(self.master, frame)

    def unplug(self) -> None:
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self.slave)
        self.link_path.unlink()

    def close(self) -> None:
        if self.link_path.is_symlink():
            self.unplug()


@pytest.fixture
def by_id(tmp_path: Path) -> Path:
    d = tmp_path / "serial" / "by-id"
    d.mkdir(parents=True)
    return d


async def read_once(link: SerialLink) -> dict:
    driver = JK_UART.driver(link, DriverOptions())
    await driver.open()
    return await driver.read()


async def test_jk_uart_over_a_pty_unplug_and_replug(by_id: Path) -> None:
    assert JK_UART.emulator is not None and JK_UART.serial is not None
    peer = PtyPeer(by_id, JK_UART.emulator(make_pack(cells=16, seed=7)))
    link = SerialLink(str(peer.link_path), JK_UART.serial)
    try:
        async with asyncio.timeout(20):
            async with link:
                first = await read_once(link)
                peer.unplug()
                t0 = time.monotonic()
                with pytest.raises(LinkClosed, match="serial port gone"):
                    while True:
                        await asyncio.wait_for(link.receive(), 3)
                noticed = time.monotonic() - t0
                with pytest.raises(LinkClosed):
                    await link.send(b"\x00")
            # Unplugged: the supervisor's next attempt is a clear DeviceNotFound, not a hang.
            with pytest.raises(DeviceNotFound, match="plugged in"):
                async with link:
                    pass
            peer.replug()
            async with link:
                again = await read_once(link)
                assert link.resolved == os.path.realpath(peer.link_path)
    finally:
        peer.close()
    expected = make_pack(cells=16, seed=7)
    assert first["cell_voltages"] == pytest.approx(expected.cell_voltages, abs=0.002)
    assert again["cell_voltages"] == pytest.approx(expected.cell_voltages, abs=0.002)
    assert noticed < 1.0


async def test_binary_bytes_pass_unchanged(tmp_path: Path) -> None:
    """Every byte value (XON/XOFF, CR/LF, 0x00, 0xFF) survives in both directions."""
    master, slave = os.openpty()
    tty.setraw(master)
    payload = bytes(range(256)) * 4
    try:
        async with asyncio.timeout(10), SerialLink(os.ttyname(slave), SerialSpec(9600)) as link:
            await link.send(payload)
            got = b""
            while len(got) < len(payload):
                got += await asyncio.to_thread(os.read, master, 4096)
            assert got == payload
            os.write(master, payload)
            back = b""
            while len(back) < len(payload):
                back += await link.receive()
            assert back == payload
    finally:
        os.close(master)
        os.close(slave)


async def test_line_settings_the_port_refuses_are_a_link_error() -> None:
    """A pty cannot do parity; real adapters can. Either way the user gets a LinkError naming the cause."""
    master, slave = os.openpty()
    try:
        with pytest.raises(LinkError, match="refused the line settings"):
            async with SerialLink(os.ttyname(slave), SerialSpec(9600, 8, "E", 1)):
                pass
    finally:
        os.close(master)
        os.close(slave)


async def test_the_port_is_opened_exclusively(by_id: Path) -> None:
    assert JK_UART.emulator is not None and JK_UART.serial is not None
    peer = PtyPeer(by_id, JK_UART.emulator(make_pack(cells=8)))
    try:
        async with asyncio.timeout(10), SerialLink(str(peer.link_path), JK_UART.serial):
            with pytest.raises(LinkError, match="in use by another program"):
                async with SerialLink(str(peer.link_path), JK_UART.serial):
                    pass
    finally:
        peer.close()


async def test_missing_port_is_device_not_found(tmp_path: Path) -> None:
    with pytest.raises(DeviceNotFound, match="plugged in"):
        async with SerialLink(str(tmp_path / "ttyUSB9"), SerialSpec(115200)):
            pass


async def test_tcp_serial_gateway(tmp_path: Path) -> None:
    """`socket://host:port`: an RS485-to-Ethernet gateway / ser2net in front of the BMS."""
    assert JK_UART.emulator is not None and JK_UART.serial is not None
    emulator = JK_UART.emulator(make_pack(cells=16, seed=7))

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(4096):
            for frame in emulator.receive(data):
                writer.write(frame)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10), SerialLink(f"socket://127.0.0.1:{port}", JK_UART.serial) as link:
            assert (await read_once(link))["cell_voltages"]
    finally:
        server.close()  # the link is closed by now, so `serve` has returned (close_clients is 3.13+)
        await server.wait_closed()
