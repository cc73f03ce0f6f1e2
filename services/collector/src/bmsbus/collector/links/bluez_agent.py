"""A BlueZ pairing agent that answers with a configured PIN (Victron SmartShunt and other passkey devices).

bleak 3 ships no agent: `BleakClient.pair()` only calls `Device1.Pair`, and BlueZ then asks whichever agent
it finds for the passkey. BlueZ looks the agent up by the sender of the Pair call and falls back to the
*default* agent, so we register ours on a D-Bus connection of our own with capability KeyboardOnly
(BlueZ then asks us: RequestPasskey / RequestPinCode) and make it the default for the duration of one
pairing. Pairings are serialised per event loop: one default agent, one PIN at a time.

The agent answers only for the device it was made for; any other request is rejected, so a stray
pairing elsewhere on the host never receives our PIN.
"""

import asyncio
import logging
from weakref import WeakKeyDictionary

from dbus_fast import BusType, DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, method

log = logging.getLogger("bmsbus.collector.links.ble")

AGENT_PATH = "/org/bmsbus/agent"
CAPABILITY = "KeyboardOnly"
REJECTED = "org.bluez.Error.Rejected"

_locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = WeakKeyDictionary()


class AgentError(Exception):
    """Registering the agent failed (no BlueZ, or another agent is in the way)."""


def device_path_suffix(address: str) -> str:
    return "/dev_" + address.upper().replace(":", "_")


class _Agent(ServiceInterface):
    def __init__(self, address: str, pin: str) -> None:
        super().__init__("org.bluez.Agent1")
        self.suffix = device_path_suffix(address)
        self.pin = pin
        self.asked = 0

    def _pin_for(self, device: str) -> str:
        if not device.endswith(self.suffix):
            raise DBusError(REJECTED, "this agent only pairs the device it was configured for")
        self.asked += 1
        return self.pin

    @method(name="Release")
    def release(self):  # noqa: ANN201 - dbus-fast reads signatures from annotations; none = no reply value
        pass

    @method(name="RequestPinCode")
    def request_pin_code(self, device: "o") -> "s":  # type: ignore[name-defined] # noqa: F821
        pin = self._pin_for(device)
        if not 1 <= len(pin) <= 16:
            raise DBusError(REJECTED, "the PIN must be 1 to 16 characters")
        return pin

    @method(name="RequestPasskey")
    def request_passkey(self, device: "o") -> "u":  # type: ignore[name-defined] # noqa: F821
        pin = self._pin_for(device)
        if not pin.isdigit() or not 0 <= int(pin) <= 999_999:
            raise DBusError(REJECTED, "a passkey must be a number 0..999999")
        return int(pin)

    @method(name="DisplayPinCode")
    def display_pin_code(self, device: "o", pincode: "s"):  # type: ignore[name-defined] # noqa: F821
        log.info("%s shows PIN %s", device, pincode)

    @method(name="DisplayPasskey")
    def display_passkey(self, device: "o", passkey: "u", entered: "q"):  # type: ignore[name-defined] # noqa: F821
        log.info("%s shows passkey %06d", device, passkey)

    @method(name="RequestConfirmation")
    def request_confirmation(self, device: "o", passkey: "u"):  # type: ignore[name-defined] # noqa: F821
        self._pin_for(device)

    @method(name="RequestAuthorization")
    def request_authorization(self, device: "o"):  # type: ignore[name-defined] # noqa: F821
        self._pin_for(device)

    @method(name="AuthorizeService")
    def authorize_service(self, device: "o", uuid: "s"):  # type: ignore[name-defined] # noqa: F821
        self._pin_for(device)

    @method(name="Cancel")
    def cancel(self):
        log.info("BlueZ cancelled the pairing request")


class PinAgent:
    """`async with PinAgent(address, pin):` -> our agent is BlueZ's default agent inside the block."""

    def __init__(self, address: str, pin: str) -> None:  # noqa: D107
        self.agent = _Agent(address, pin)
        self._bus: MessageBus | None = None
        self._lock = _locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
        self._registered = False

    @property
    def asked(self) -> int:
        """How often BlueZ asked for the PIN (0 after a pairing = it paired without one)."""
        return self.agent.asked

    async def _call(self, member: str, signature: str, body: list) -> None:
        assert self._bus is not None
        reply = await self._bus.call(Message(destination="org.bluez", path="/org/bluez",
                                             interface="org.bluez.AgentManager1", member=member,
                                             signature=signature, body=body))
        if reply is None or reply.message_type == MessageType.ERROR:
            detail = (reply.error_name, *(reply.body or ())) if reply is not None else "no reply"
            raise AgentError(f"{member} failed: {detail}")

    async def __aenter__(self) -> "PinAgent":
        await self._lock.acquire()
        try:
            self._bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            self._bus.export(AGENT_PATH, self.agent)
            await self._call("RegisterAgent", "os", [AGENT_PATH, CAPABILITY])
            self._registered = True
            await self._call("RequestDefaultAgent", "o", [AGENT_PATH])
        except BaseException:
            await self._close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        try:
            if self._bus is not None:
                if self._registered:
                    try:
                        async with asyncio.timeout(2):
                            await self._call("UnregisterAgent", "o", [AGENT_PATH])
                    except (AgentError, TimeoutError, OSError, EOFError) as exc:
                        log.debug("unregistering the pairing agent: %s", exc)  # it goes with the connection anyway
                self._bus.disconnect()
        finally:
            self._bus = None
            self._registered = False
            self._lock.release()
