"""Serial / RS485 / UART through pyserial-asyncio-fast: the one module that touches pyserial.

`async with SerialLink("/dev/serial/by-id/usb-FTDI_...-if00-port0", SerialSpec(115200))` opens the port
exclusively (a second collector or ModemManager gets a clear error instead of half the bytes), with the
protocol's framing (baud, data bits, parity, stop bits). Whatever the port delivers goes to the queue;
when the adapter is unplugged (EOF / EIO / "device reports readiness to read but returned no data") the
link ends with LinkClosed, and entering it again reopens the same path, so the supervisor's reconnect
loop picks the adapter up again once it is back. Use /dev/serial/by-id/ paths: /dev/ttyUSB0 may come back
as /dev/ttyUSB1 after a replug. pyserial URLs work too: `socket://host:port` (ser2net, RS485-to-Ethernet
gateways) and `rfc2217://host:port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import logging
import os
import termios
from collections.abc import Iterator
from typing import Self

import serial
from serial_asyncio_fast import SerialTransport, create_serial_connection

from ..driver import SerialSpec
from .base import DeviceNotFound, LinkClosed, LinkError, LinkTimeout, QueueLink

log = logging.getLogger("bmsbus.collector.links.serial")

PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD, "M": serial.PARITY_MARK,
          "S": serial.PARITY_SPACE}
URL_SCHEMES = ("socket://", "rfc2217://", "loop://", "spy://", "alt://", "hwgrep://")


def is_url(port: str) -> bool:
    return port.startswith(URL_SCHEMES)


@contextlib.contextmanager
def mapped(port: str, action: str) -> Iterator[None]:
    prefix = f"{port}: {action}"
    try:
        yield
    except LinkError:
        raise
    except TimeoutError as exc:
        raise LinkTimeout(f"{prefix}: timed out") from exc
    except FileNotFoundError as exc:
        raise DeviceNotFound(f"{prefix}: no such port; is the adapter plugged in? (ls /dev/serial/by-id/)") from exc
    except PermissionError as exc:
        raise LinkError(f"{prefix}: permission denied; add the user to the `dialout` group or run the "
                        "container with the device mapped") from exc
    except serial.SerialException as exc:
        text = str(exc)
        if "exclusively lock" in text:
            raise LinkError(f"{prefix}: the port is in use by another program (another collector, "
                            "ModemManager, a serial console?)") from exc
        if isinstance(exc.__context__, FileNotFoundError) or getattr(exc, "errno", None) == errno.ENOENT \
                or "No such file" in text:
            raise DeviceNotFound(f"{prefix}: no such port; is the adapter plugged in? "
                                 "(ls /dev/serial/by-id/)") from exc
        raise LinkError(f"{prefix}: {exc}") from exc
    except (ConnectionError, OSError) as exc:
        raise LinkClosed(f"{prefix}: {type(exc).__name__}: {exc}") from exc
    except termios.error as exc:  # tcsetattr refused the settings (e.g. parity on a pty)
        raise LinkError(f"{prefix}: the port refused the line settings: {exc}") from exc
    except ValueError as exc:  # pyserial: bad baud rate / framing / URL
        raise LinkError(f"{prefix}: {exc}") from exc


class _Protocol(asyncio.Protocol):
    def __init__(self, link: SerialLink) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link._deliver(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link._on_lost(exc)


class SerialLink(QueueLink):
    kind = "serial"

    def __init__(self, port: str, spec: SerialSpec, *, name: str | None = None, open_timeout: float = 5.0,
                 write_timeout: float = 5.0, exclusive: bool = True, log: logging.Logger | None = None) -> None:
        super().__init__()
        self.port = port
        self.spec = spec
        self.name = name or port
        self.open_timeout = open_timeout
        self.write_timeout = write_timeout
        self.exclusive = exclusive
        self.log = log or globals()["log"]
        self.transport: SerialTransport | None = None
        self.resolved: str | None = None  # what a by-id symlink pointed at when we opened it

    def __repr__(self) -> str:
        s = self.spec
        return f"SerialLink({self.port!r}, {s.baudrate} {s.bytesize}{s.parity}{s.stopbits})"

    async def __aenter__(self) -> Self:
        if self.transport is not None:
            raise LinkError(f"{self.name}: link entered twice")
        self._open_stream()
        kwargs: dict[str, object] = dict(baudrate=self.spec.baudrate, bytesize=self.spec.bytesize,
                                         parity=PARITY[self.spec.parity.upper()], stopbits=self.spec.stopbits)
        path = self.port
        if not is_url(path):
            kwargs["exclusive"] = self.exclusive
            path = self._expand(path)
            self.resolved = os.path.realpath(path)
        with mapped(self.port, "open"):
            async with asyncio.timeout(self.open_timeout):
                transport, _ = await create_serial_connection(asyncio.get_running_loop(), lambda: _Protocol(self),
                                                              path, **kwargs)
        self.transport = transport  # type: ignore[assignment]
        self.log.debug("%s open (%s)", self.name, self.resolved or self.port)
        return self

    def _expand(self, pattern: str) -> str:
        """The port path; a glob (batmon-ha allows `/dev/serial/by-id/usb-FTDI*`) must match exactly one."""
        if any(c in pattern for c in "*?["):
            matches = sorted(glob.glob(pattern))
            if len(matches) > 1:
                raise LinkError(f"{pattern}: matches {len(matches)} ports ({', '.join(matches)}); make it unique")
            if not matches:
                raise DeviceNotFound(f"{pattern}: no port matches; is the adapter plugged in? (ls /dev/serial/by-id/)")
            return matches[0]
        if not os.path.exists(pattern):
            raise DeviceNotFound(f"{pattern}: no such port; is the adapter plugged in? (ls /dev/serial/by-id/)")
        return pattern

    async def __aexit__(self, *exc: object) -> None:
        transport, self.transport = self.transport, None
        if transport is not None and not transport.is_closing():
            transport.abort()
            # The transport closes the port in an executor and then calls connection_lost; give it that.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    while self._closed is None:
                        await asyncio.sleep(0.01)
        self._lost("closed by us")

    def _on_lost(self, exc: Exception | None) -> None:
        if self._closed is None:
            reason = f"serial port gone ({exc})" if exc else "serial port closed"
            if self.transport is not None:
                self.log.debug("%s: %s", self.name, reason)
            self._lost(reason)

    async def send(self, data: bytes) -> None:
        if self._closed is not None:
            raise LinkClosed(self._closed)
        transport = self.transport
        if transport is None or transport.is_closing():
            raise LinkClosed(f"{self.name}: not open")
        with mapped(self.port, "write"):
            transport.write(data)
            async with asyncio.timeout(self.write_timeout):
                while transport.get_write_buffer_size() and not transport.is_closing():
                    await asyncio.sleep(0.005)
        if self._closed is not None:
            raise LinkClosed(self._closed)

    def discard_pending(self) -> None:
        super().discard_pending()
        transport = self.transport
        if transport is not None and not transport.is_closing() and not is_url(self.port):
            with contextlib.suppress(serial.SerialException, OSError, AttributeError):
                transport.serial.reset_input_buffer()
