"""ANT driver (7E A1 protocol over BLE): device info at open, one status request per read, func 0x51
register writes for the charge/discharge/balance switches.

Options: `secret` for units that want the optional authentication (func 0x23, sent once at open);
`mos_status_order`: `discharge_first` (default: byte 46 is the discharge MOS status, 47 the charge MOS, what
both real full-charge frames show, see codec.DISCHARGE_CODE_AT) or `charge_first` (aiobmsble's and
esphome-ant-bms's reading). The older `swap_mos_status` is still read as it was documented: true =
discharge first, false = charge first.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ...codec import DeviceInfo, Reading, UsageError
from ...driver import Driver
from . import codec as ant

OPTIONAL_TIMEOUT = 3.0
MOS_ORDERS = ("discharge_first", "charge_first")


def mos_order(options: dict[str, Any]) -> str:
    """`mos_status_order`, or the legacy `swap_mos_status` (true = batmon's = discharge first), else the default."""
    if "mos_status_order" in options:
        order = str(options["mos_status_order"]).lower()
        if order not in MOS_ORDERS:
            raise UsageError(f"ant mos_status_order must be one of {', '.join(MOS_ORDERS)}, not {order!r}")
        return order
    if "swap_mos_status" in options:
        return "discharge_first" if options["swap_mos_status"] else "charge_first"
    return "discharge_first"


class AntDriver(Driver):
    protocol: ClassVar[str] = "ant"
    quantities = frozenset({"voltage", "current", "power", "soc", "soh", "charge", "design_capacity",
                            "cycle_charge", "cell_voltages", "temperatures", "mos_temperature", "balancing",
                            "switches", "alarms", "problem_code", "uptime"})
    switches = ("charge", "discharge", "balance")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = self.options.options
        secret = opts.get("secret")
        self.secret = None if secret in (None, "") else str(secret)
        self.mos_status_order = mos_order(opts)

    def new_assembler(self) -> ant.AntAssembler:
        return ant.AntAssembler()

    async def open(self) -> DeviceInfo:
        if self.secret is not None:
            await self.link.send(ant.build_auth(self.secret))  # no reply is documented
        try:
            frame = await self.transact(ant.build_device_info_request(),
                                        lambda f: f.kind == ant.REPLY_DEVICE_INFO,
                                        min(OPTIONAL_TIMEOUT, self.options.request_timeout))
        except TimeoutError:
            self.log.info("ANT sent no device info")
            return DeviceInfo(manufacturer="ANT")
        return ant.decode_device_info(frame)

    async def read(self) -> Reading:
        frame = await self.transact(ant.build_status_request(), lambda f: f.kind == ant.REPLY_STATUS)
        return ant.decode_status(frame, charge_first=self.mos_status_order == "charge_first")

    async def set_switch(self, name: str, on: bool) -> None:
        if name not in self.switches:
            raise UsageError(f"{self.protocol} cannot set switch {name!r}")
        # The write's acknowledgement (func 0x61) is undocumented; the status read-back is the check.
        await self.link.send(ant.build_switch(name, on))
        state = (await self.read())["switches"]
        if state.get(name) != on:
            self.log.warning("ANT %s is %s after switching it %s", name, "on" if state.get(name) else "off",
                             "on" if on else "off")
