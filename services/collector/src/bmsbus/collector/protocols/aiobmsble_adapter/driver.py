"""Run an aiobmsble plugin as a bmsbus driver.

aiobmsble owns its BleakClient (connect, GATT, notifications, retries), so there are no bytes for our
Link to carry. The split stays the same anyway: the *link* owns the transport, the *driver* owns the
conversation.

- AiobmsbleLink (kind "aiobmsble"): `async with` resolves the configured address to a fresh bleak
  BLEDevice (never cached across reconnects) and creates the plugin's BMS object; leaving the block
  disconnects it. It carries no raw bytes: send()/receive() raise UsageError.
- AiobmsbleDriver(Driver): open() -> DeviceInfo from the plugin's device_info(); read() -> one
  async_update() mapped by map_sample(). Read-only: no writable switches. aiobmsble's exceptions are
  mapped onto ours: TimeoutError -> LinkTimeout, device missing -> DeviceNotFound, BleakError /
  ConnectionError / EOFError / PermissionError (wrong secret) -> LinkError, ValueError ("BMS data
  incomplete") -> CodecError.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self

from ...codec import CodecError, DeviceInfo, Frame, Reading, UsageError
from ...driver import Driver, DriverOptions
from ...links.base import DeviceNotFound, LinkError, LinkTimeout
from .mapping import map_sample, mapped_targets
from .plugins import plugin_modules, type_name

if TYPE_CHECKING:
    from aiobmsble.basebms import BaseBMS
    from bleak.backends.device import BLEDevice

# aiobmsble's own connect safety net is 4 x 20 s + 1 s; one update must finish within this.
UPDATE_TIMEOUT: Final = 90.0
SCAN_TIMEOUT: Final = 15.0


class _NoBytes:
    """Assembler placeholder: an aiobmsble driver never sees raw chunks."""

    def feed(self, chunk: bytes) -> None:
        raise UsageError("aiobmsble drivers assemble no frames")

    def next_frame(self) -> Frame | None:
        return None


class AiobmsbleLink:
    """The connection an aiobmsble plugin drives itself (see module docstring)."""

    kind = "aiobmsble"

    def __init__(self, bms_class: type[BaseBMS], target: BLEDevice | str, *, secret: str = "",
                 scan_timeout: float = SCAN_TIMEOUT, log: logging.Logger | None = None) -> None:
        self.bms_class = bms_class
        self.target = target
        self.secret = secret
        self.scan_timeout = scan_timeout
        self.rssi: int | None = None
        self.bms: BaseBMS | None = None
        self.log = log or logging.getLogger("bmsbus.collector.aiobmsble")

    async def _resolve(self) -> BLEDevice:
        if not isinstance(self.target, str):
            return self.target
        from bleak import BleakScanner
        from bleak.exc import BleakError

        target = self.target.upper()  # a MAC (or a platform id) or the advertised name

        def wanted(device: Any, adv: Any) -> bool:
            names = (device.address, device.name or "", adv.local_name or "")
            if target not in (n.upper() for n in names):
                return False
            self.rssi = adv.rssi
            return True

        try:
            device = await BleakScanner.find_device_by_filter(wanted, timeout=self.scan_timeout)
        except (BleakError, OSError) as err:
            raise LinkError(f"scanning for {self.target}: {err}") from err
        if device is None:
            raise DeviceNotFound(f"{self.target} not seen within {self.scan_timeout:.0f} s")
        return device

    async def __aenter__(self) -> Self:
        from aiobmsble import BMSConfig

        device = await self._resolve()
        self.bms = self.bms_class(device, BMSConfig(keep_alive=True, secret=self.secret))
        return self

    async def __aexit__(self, *exc: object) -> None:
        bms, self.bms = self.bms, None
        if bms is None:
            return
        try:
            await bms.disconnect()
        except Exception as err:  # noqa: BLE001 - closing must not mask the error that got us here
            self.log.debug("aiobmsble disconnect failed: %r", err)

    async def send(self, data: bytes) -> None:
        raise UsageError("an aiobmsble link carries no raw bytes")

    async def receive(self) -> bytes:
        raise UsageError("an aiobmsble link carries no raw bytes")

    def discard_pending(self) -> None:
        return None


class AiobmsbleDriver(Driver):
    """Base of the per-plugin drivers made by driver_class(); read-only."""

    protocol: ClassVar[str] = "aiobmsble"
    plugin: ClassVar[str] = ""  # aiobmsble module name, e.g. "seplos_bms"
    # The collector builds this driver's link with make_link() instead of opening a byte link.
    owns_transport: ClassVar[bool] = True
    quantities: ClassVar[frozenset[str]] = mapped_targets()
    switches: ClassVar[tuple[str, ...]] = ()

    link: AiobmsbleLink

    def __init__(self, link: AiobmsbleLink, options: DriverOptions | None = None,  # type: ignore[override]
                 log: logging.Logger | None = None) -> None:
        super().__init__(link, options, log)  # type: ignore[arg-type]
        self.on_sample: Callable[[Mapping[str, Any]], None] | None = None  # raw capture hook (BMSSample)

    @classmethod
    def bms_class(cls) -> type[BaseBMS]:
        return plugin_modules()[cls.plugin].BMS

    @classmethod
    def make_link(cls, target: BLEDevice | str, options: DriverOptions | None = None) -> AiobmsbleLink:
        """The link for one device: a bleak BLEDevice, or a MAC / advertised name resolved by scanning on
        enter. `options.options["secret"]` (or `"pin"`) is the plugin's application secret (JBD password)."""
        opts = (options or DriverOptions()).options
        secret = opts.get("secret", opts.get("pin", ""))
        secret = secret.get_secret_value() if hasattr(secret, "get_secret_value") else secret
        return AiobmsbleLink(cls.bms_class(), target, secret=str(secret or ""),
                             scan_timeout=float(opts.get("scan_timeout", SCAN_TIMEOUT)),
                             log=logging.getLogger(f"bmsbus.collector.{cls.protocol}"))

    def new_assembler(self) -> _NoBytes:
        return _NoBytes()

    def _bms(self) -> BaseBMS:
        if self.link.bms is None:
            raise LinkError("aiobmsble link is not open")
        return self.link.bms

    async def _call(self, what: str, make: Callable[[], Awaitable[Any]]) -> Any:
        """Run one aiobmsble coroutine (made by `make`) with a deadline, mapping its errors to ours."""
        from bleak.exc import BleakDeviceNotFoundError, BleakError
        from bleak_retry_connector import BleakNotFoundError

        timeout = float(self.options.options.get("update_timeout", UPDATE_TIMEOUT))
        try:
            async with asyncio.timeout(timeout):
                return await make()
        except TimeoutError as err:
            raise LinkTimeout(f"{self.protocol}: {what} timed out") from err
        except (BleakDeviceNotFoundError, BleakNotFoundError) as err:
            raise DeviceNotFound(f"{self.protocol}: {err}") from err
        except PermissionError as err:
            raise LinkError(f"{self.protocol}: {what} refused (wrong secret?): {err}") from err
        except (BleakError, ConnectionError, EOFError) as err:
            raise LinkError(f"{self.protocol}: {what} failed: {err}") from err
        except ValueError as err:
            self.codec_errors += 1
            raise CodecError(f"{self.protocol}: {err}") from err

    async def open(self) -> DeviceInfo:
        bms = self._bms()
        info: dict[str, Any] = dict(await self._call("device info", bms.device_info))
        static: dict[str, Any] = dict(self.bms_class().INFO)
        extra = {"plugin": self.plugin}
        if info.get("model_id"):
            extra["model_id"] = str(info["model_id"])
        return DeviceInfo(
            manufacturer=info.get("manufacturer") or static.get("manufacturer"),
            model=info.get("model") or static.get("model"),
            hw_version=info.get("hw_version"),
            sw_version=info.get("sw_version") or info.get("fw_version"),
            serial=info.get("serial_number"),
            name=info.get("name") or bms.name,
            extra=extra,
        )

    async def read(self) -> Reading:
        sample = await self._call("update", self._bms().async_update)
        if self.on_sample is not None:
            self.on_sample(sample)
        return map_sample(sample)


@cache
def driver_class(plugin: str) -> type[AiobmsbleDriver]:
    """The driver class of one plugin (`seplos_bms` -> protocol `seplos_ble`)."""
    if plugin not in plugin_modules():
        raise KeyError(f"no aiobmsble plugin {plugin!r}")
    name = type_name(plugin)
    return type(f"AiobmsbleDriver_{plugin}", (AiobmsbleDriver,),
                {"protocol": name, "plugin": plugin, "__module__": __name__,
                 "__doc__": f"aiobmsble {plugin} as bmsbus type {name} (read-only)."})
