"""aiobmsble plugins as bmsbus types: registry, the value table, and every recorded conversation replayed.

The replay drives the *real* aiobmsble plugin through our AiobmsbleLink/AiobmsbleDriver. The only fake
is the BleakClient (patched into aiobmsble.basebms, the way aiobmsble's own tests do it): it answers
each write with the notifications that followed the same request in the recording
(shared/vectors/aiobmsble.json `sequence`), one by one with a short gap as a radio would, and streams
the notifications recorded before any request once notifications are switched on. The raw BMSSample
must equal aiobmsble's own expectation, and map_sample() of it must equal that expectation converted
to our keys by hand (expected_reading below, written independently of the table).
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiobmsble import BMSSample, TempSensor
from aiobmsble.basebms import BaseBMS
from aiobmsble.utils import load_bms_plugins
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.backends.service import BleakGATTService, BleakGATTServiceCollection
from bleak.exc import BleakError
from bleak.uuids import normalize_uuid_str

from bmsbus.collector.codec import CodecError, UsageError
from bmsbus.collector.driver import Driver
from bmsbus.collector.links.base import LinkError, LinkTimeout
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.aiobmsble_adapter import (
    EXCLUDED, FIELD_MAP, PROTOCOLS, UNMAPPED, AiobmsbleDriver, available_types, driver_class, map_sample,
    mapped_targets, plugin_modules, type_name,
)
from bmsbus.collector.protocols.aiobmsble_adapter.mapping import PROBLEM_ALARM, mapping_table_markdown
from bmsbus.collector.protocols.aiobmsble_adapter.plugins import types_table_markdown
from bmsbus.shared.models import Sample
from bmsbus.shared.quantities import SAMPLE_KEYS

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO.parent / "shared" / "vectors" / "aiobmsble.json"
ENTRIES: list[dict[str, Any]] = json.loads(VECTORS.read_text())
DOC = REPO / "docs" / "bms" / "aiobmsble.md"

GAP = 0.0005  # s between two notifications of one reply
# aiobmsble's wait per request attempt (0.71 s upstream, doubling per retry) and for streamed data (5 s).
# Generous, so a loaded CI machine does not make a reply late, except where the recording itself has
# requests the device never answered: there the plugin always waits the full time, so keep it short.
RETRY_TIMEOUT = 0.3
RETRY_TIMEOUT_UNANSWERED = 0.02
TIMEOUT = 2.0

# Plugins whose recording was made with every notification handled *inside* the write that caused it
# (d-powercore acknowledges each page from its async handler before the next request goes out).
INLINE_DELIVERY = {"dpwrcore_bms"}

# Entries known not to replay, with the reason. Non-strict: they depend on timing, not on our code.
KNOWN_FAILURES = {
    "tests/bms/test_dometic_bms.py::test_update[keep_alive]":
        "multi-pack Dometic recording is timing-dependent (vector file: replay_verified=false)",
    "tests/bms/test_dometic_bms.py::test_keep_alive_handler_broken_sender":
        "multi-pack Dometic recording is timing-dependent (vector file: replay_verified=false)",
    "tests/bms/test_dometic_bms.py::test_inc_update":
        "multi-pack Dometic recording is timing-dependent (vector file: replay_verified=false)",
}


# --- the fake BleakClient ---------------------------------------------------------------------------

def _uuid(char: Any) -> Any:
    if isinstance(char, BleakGATTCharacteristic):
        return char.uuid
    return char if isinstance(char, int) else normalize_uuid_str(str(char))


class Recording:
    """One vector's conversation: notifications before any request, then (request, replies) blocks."""

    def __init__(self, entry: dict[str, Any]) -> None:
        self.lead: list[dict[str, Any]] = []
        self.blocks: list[dict[str, Any]] = []
        for step in entry["sequence"]:
            if "tx" in step:
                self.blocks.append({"tx": bytes.fromhex(step["tx"]), "rx": [], "used": False})
            elif self.blocks:
                self.blocks[-1]["rx"].append(step)
            else:
                self.lead.append(step)
        self.inline = entry["bms"] in INLINE_DELIVERY
        self.pending = b""  # a request the plugin writes in chunks
        self.writes: list[bytes] = []


def replay_client(rec: Recording, bms_class: type[BaseBMS]) -> type:
    rx_uuid = normalize_uuid_str(bms_class.uuid_rx())
    try:
        tx_uuid: str | None = normalize_uuid_str(bms_class.uuid_tx())
    except NotImplementedError:  # stream-only plugins
        tx_uuid = None

    class ReplayClient:
        def __init__(self, device: BLEDevice, disconnected_callback: Callable[..., None] | None = None,
                     services: Any = None, **_kw: Any) -> None:
            self._device = device
            self._connected = False
            self._on_disconnect = disconnected_callback
            self._callbacks: dict[Any, Callable[..., Any]] = {}
            self._queue: list[tuple[list[dict[str, Any]], bool]] = []
            self._worker: asyncio.Task[None] | None = None
            # A GATT table with the plugin's own UUIDs (JK and Renogy Pro look characteristics up by handle).
            self._services = BleakGATTServiceCollection()
            self._handles: dict[int, str] = {}
            svcs = []
            for handle, uuid in enumerate(bms_class.uuid_services(), start=1):
                svcs.append(BleakGATTService(None, handle, normalize_uuid_str(uuid)))
                self._services.add_service(svcs[-1])
            chars = [(tx_uuid, svcs[0])] if tx_uuid and tx_uuid != rx_uuid else []
            chars.append((rx_uuid, svcs[-1] if chars else svcs[0]))
            for handle, (uuid, svc) in enumerate(chars, start=100):
                props = ["read", "write", "write-without-response", "notify"]
                self._services.add_characteristic(BleakGATTCharacteristic(None, handle, uuid, props, lambda: 512, svc))
                self._handles[handle] = uuid

        @property
        def address(self) -> str:
            return self._device.address

        @property
        def is_connected(self) -> bool:
            return self._connected

        @property
        def services(self) -> BleakGATTServiceCollection:
            return self._services

        async def connect(self, **_kw: Any) -> None:
            self._connected = True

        async def disconnect(self) -> None:
            self._connected = False
            if self._worker is not None:
                self._worker.cancel()
            if self._on_disconnect is not None:
                self._on_disconnect(self)

        def _key(self, char: Any) -> Any:
            key = _uuid(char)
            return self._handles.get(key, key) if isinstance(key, int) else key

        async def start_notify(self, char: Any, callback: Callable[..., Any], **_kw: Any) -> None:
            self._callbacks[self._key(char)] = callback
            if rec.lead:  # a streaming device starts talking once notifications are on
                lead, rec.lead = rec.lead, []
                self._deliver(lead, burst=True)

        async def stop_notify(self, char: Any) -> None:
            self._callbacks.pop(self._key(char), None)

        async def read_gatt_char(self, char: Any, **_kw: Any) -> bytearray:
            return bytearray()

        async def write_gatt_char(self, char: Any, data: Any, response: bool | None = None) -> None:
            rec.writes.append(bytes(data))
            rec.pending += bytes(data)
            same = [b for b in rec.blocks if b["tx"] == rec.pending]
            # the recorded answer to this request; a retry of an answered request is answered again
            block = next((b for b in same if not b["used"]), None) or next(
                (b for b in reversed(same) if any(step["rx"] for step in b["rx"])), None)
            if block is not None:
                block["used"], rec.pending = True, b""
                if rec.inline:
                    for step in block["rx"]:
                        await self._notify(step)
                else:
                    self._deliver(block["rx"])
                return
            if same or not any(b["tx"].startswith(rec.pending) for b in rec.blocks):
                rec.pending = b""  # unanswered or not a recorded request: no answer, as a device would

        def _deliver(self, steps: list[dict[str, Any]], burst: bool = False) -> None:
            if steps:
                self._queue.append((steps, burst))
                if self._worker is None or self._worker.done():
                    self._worker = asyncio.get_running_loop().create_task(self._run_queue())

        async def _run_queue(self) -> None:
            while self._queue:
                steps, burst = self._queue.pop(0)
                if burst:
                    await asyncio.sleep(GAP)
                for step in steps:
                    if not burst:
                        await asyncio.sleep(GAP)
                    await self._notify(step)

        async def _notify(self, step: dict[str, Any]) -> None:
            sender_uuid = _uuid(step.get("sender") or rx_uuid)
            callback = self._callbacks.get(sender_uuid) or self._callbacks.get(rx_uuid)
            if callback is None:
                return
            sender = BleakGATTCharacteristic(None, 0xFFFF, sender_uuid, ["notify"], lambda: 512,
                                             BleakGATTService(None, 0xFFFF, sender_uuid))
            result = callback(sender, bytearray.fromhex(step["rx"]))
            if asyncio.iscoroutine(result):
                await result

    return ReplayClient


# --- expectation in our keys, written out by hand (the oracle for the FIELD_MAP table) -------------

def _temp(t: Any) -> tuple[float, str]:
    return (float(t["value"]), t["type"]) if isinstance(t, dict) else (float(t), "GENERIC")


def expected_reading(exp: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for ours, theirs in (("voltage", "voltage"), ("current", "current"), ("power", "power"),
                         ("soc", "battery_level"), ("soh", "battery_health"), ("charge", "cycle_charge"),
                         ("design_capacity", "design_capacity"), ("cycle_charge", "total_charge"),
                         ("balance_current", "balance_current")):
        if theirs in exp:
            out[ours] = exp[theirs]
    if "cycle_capacity" in exp:
        out["energy"] = exp["cycle_capacity"] / 1000  # Wh -> kWh
    for key in ("cycles", "problem_code", "cell_voltages"):
        if key in exp:
            out[key] = exp[key]
    temps = [_temp(t) for t in exp.get("temp_values", [])]
    if pack := [v for v, kind in temps if kind != "MOSFET"]:
        out["temperatures"] = pack
    elif "temperature" in exp:
        out["temperatures"] = [exp["temperature"]]
    if mos := [v for v, kind in temps if kind == "MOSFET"]:
        out["mos_temperature"] = max(mos)
    balancer = exp.get("balancer")
    if isinstance(balancer, bool):
        out.setdefault("switches", {})["balance"] = balancer
    elif isinstance(balancer, int):
        out["balancing"] = [cell for cell in range(64) if balancer >> cell & 1]
    for theirs, name in (("chrg_mosfet", "charge"), ("dischrg_mosfet", "discharge"), ("heater", "heater")):
        if theirs in exp:
            out.setdefault("switches", {})[name] = exp[theirs]
    if "problem" in exp:
        out["alarms"] = [PROBLEM_ALARM] if exp["problem"] else []
    return out


def as_json(value: Any) -> Any:
    """A BMSSample in the vector file's JSON shape."""
    if isinstance(value, TempSensor):
        return {"value": value.value, "type": value.type.name}
    if isinstance(value, dict):
        return {k: as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [as_json(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)  # IntEnum (battery_mode)
    return value


def same(a: Any, b: Any) -> bool:
    """Equality with the vector file's looseness: a temperature may be a bare number."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, (int, float)):
        return a.get("value") == b
    if isinstance(b, dict) and isinstance(a, (int, float)):
        return b.get("value") == a
    return bool(a == b)


def approx(reading: dict[str, Any]) -> Any:
    return {k: (pytest.approx(v) if isinstance(v, (float, list)) and k != "alarms" else v) for k, v in reading.items()}


# --- the replay -------------------------------------------------------------------------------------

def _param(entry: dict[str, Any]) -> Any:
    test_id = entry["test"]
    marks = [pytest.mark.xfail(reason=KNOWN_FAILURES[test_id], strict=False)] if test_id in KNOWN_FAILURES else []
    return pytest.param(entry, id=test_id.removeprefix("tests/bms/test_").replace(".py::", ":"), marks=marks)


def has_unanswered_requests(rec: Recording) -> bool:
    return any(not any(step["rx"] for step in block["rx"]) for block in rec.blocks)


@pytest.mark.parametrize("entry", [_param(e) for e in ENTRIES])
async def test_recorded_conversation(entry: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = entry["bms"]
    cls = driver_class(plugin)
    rec = Recording(entry)
    retry = RETRY_TIMEOUT_UNANSWERED if has_unanswered_requests(rec) else RETRY_TIMEOUT
    monkeypatch.setattr(BaseBMS, "_RETRY_TIMEOUT", retry)
    monkeypatch.setattr(BaseBMS, "TIMEOUT", TIMEOUT)
    monkeypatch.setattr("aiobmsble.basebms.BleakClient", replay_client(rec, cls.bms_class()))
    device = BLEDevice(entry["device"]["address"], entry["device"]["name"], None)

    raw: list[BMSSample] = []
    async with asyncio.timeout(20):
        async with cls.make_link(device) as link:
            driver = cls(link)
            driver.on_sample = raw.append
            reading = await driver.read()

    assert same(as_json(raw[0]), entry["expected"]), "aiobmsble itself decoded the recording differently"
    assert reading == approx(expected_reading(entry["expected"]))
    Sample(bms="b1", ts=0.0, boot="x", seq=0, **reading)  # the bus model accepts it as it is


def test_every_recorded_plugin_is_a_type() -> None:
    assert {type_name(e["bms"]) for e in ENTRIES} <= set(available_types())


# --- registry ---------------------------------------------------------------------------------------

def test_every_aiobmsble_plugin_is_registered() -> None:
    plugins = {m.__name__.rsplit(".", 1)[-1] for m in load_bms_plugins()} - set(EXCLUDED)
    assert len(plugins) >= 50
    assert {type_name(p) for p in plugins} == {e.name for e in PROTOCOLS}
    for entry in PROTOCOLS:
        assert REGISTRY[entry.name] is entry
        assert entry.family == "aiobmsble"
        assert issubclass(entry.driver, AiobmsbleDriver) and issubclass(entry.driver, Driver)
        assert entry.driver.protocol == entry.name and entry.driver.owns_transport
        assert entry.ble is None and entry.serial is None  # no byte link can be opened for these
    assert type_name("aiobmsble.bms.seplos_v2_bms") == "seplos_v2_ble"
    with pytest.raises(ValueError):
        type_name("seplos")


async def test_read_only() -> None:
    cls = driver_class("seplos_bms")
    link = cls.make_link(BLEDevice("11:22:33:44:55:66", "x", None))
    driver = cls(link)
    assert driver.writable_switches() == () and cls.switches == ()
    with pytest.raises(UsageError):
        await driver.set_switch("charge", False)
    with pytest.raises(UsageError):
        await link.send(b"\x00")


# --- error mapping ----------------------------------------------------------------------------------

class _FailingBMS:
    name = "fake"

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
        self.disconnected = False

    async def async_update(self) -> BMSSample:
        raise self.exc

    async def device_info(self) -> dict[str, str]:
        raise self.exc

    async def disconnect(self, reset: bool = False) -> None:
        self.disconnected = True


@pytest.mark.parametrize(("exc", "ours"), [
    (TimeoutError(), LinkTimeout),
    (BleakError("gone"), LinkError),
    (ConnectionError("refused"), LinkError),
    (PermissionError("wrong password"), LinkError),
    (ValueError("BMS data incomplete."), CodecError),
])
async def test_errors_map_to_ours(exc: BaseException, ours: type[Exception], monkeypatch: pytest.MonkeyPatch) -> None:
    cls = driver_class("jbd_bms")
    silent = Recording({"bms": "jbd_bms", "sequence": []})
    monkeypatch.setattr("aiobmsble.basebms.BleakClient", replay_client(silent, cls.bms_class()))
    link = cls.make_link(BLEDevice("11:22:33:44:55:66", "x", None))
    async with link:
        fake = _FailingBMS(exc)
        link.bms = fake  # type: ignore[assignment]
        driver = cls(link)
        with pytest.raises(ours):
            await driver.read()
        with pytest.raises(ours):
            await driver.open()
    assert fake.disconnected and link.bms is None  # leaving the link disconnects and forgets the device


# --- the table --------------------------------------------------------------------------------------

def test_table_covers_every_bmssample_key() -> None:
    keys = set(BMSSample.__required_keys__ | BMSSample.__optional_keys__)
    sources = {row.source for row in FIELD_MAP}
    assert sources | set(UNMAPPED) == keys, "a new aiobmsble key needs a FIELD_MAP row or an UNMAPPED reason"
    assert not sources & set(UNMAPPED)
    assert mapped_targets() <= SAMPLE_KEYS
    assert AiobmsbleDriver.quantities == mapped_targets()


def test_units_and_shapes() -> None:
    reading = map_sample({
        "voltage": 53.2, "current": -7.5, "power": -399.0, "battery_level": 48, "battery_health": 99,
        "cycle_charge": 134.1, "cycle_capacity": 7134.0, "design_capacity": 280, "cycles": 9,
        "total_charge": 2500, "cell_voltages": [3.32, 3.33],
        "temp_values": [TempSensor(20.5, TempSensor.T.MOSFET), TempSensor(18.0), 19, TempSensor(30.0, TempSensor.T.MOSFET)],
        "temperature": 21.9, "balancer": 0b101, "chrg_mosfet": True, "dischrg_mosfet": False, "heater": False,
        "problem_code": 0, "problem": False, "runtime": 3600, "battery_mode": 2, "delta_voltage": 0.01,
    })
    assert reading == {
        "voltage": 53.2, "current": -7.5, "power": -399.0, "soc": 48, "soh": 99, "charge": 134.1,
        "energy": 7.134, "design_capacity": 280, "cycles": 9, "cycle_charge": 2500, "cell_voltages": [3.32, 3.33],
        "temperatures": [18.0, 19.0], "mos_temperature": 30.0, "balancing": [0, 2],
        "switches": {"charge": True, "discharge": False, "heater": False}, "problem_code": 0, "alarms": [],
    }


@pytest.mark.parametrize(("sample", "reading"), [
    ({"temperature": 24.4}, {"temperatures": [24.4]}),  # plugins without temp_values
    ({"balancer": True}, {"switches": {"balance": True}}),
    ({"balancer": 0}, {"balancing": []}),
    ({"problem": True, "problem_code": 1 << 63}, {"alarms": [PROBLEM_ALARM], "problem_code": 1 << 63}),
    ({"voltage": math.nan, "current": math.inf, "soc": 5}, {}),  # non-finite = absent; `soc` is not theirs
    ({"battery_level": 101, "battery_health": -1, "cycles": -3}, {}),  # out of range = absent
    ({"cell_voltages": [3.3, math.nan]}, {}),  # cells keep positions: no partial list
    ({"temp_values": [math.nan, 20.0]}, {"temperatures": [20.0]}),
    ({"chrg_mosfet": 1}, {}),  # a switch state must be a real bool
    ({}, {}),
])
def test_edges(sample: dict[str, Any], reading: dict[str, Any]) -> None:
    assert map_sample(sample) == reading


# --- docs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("marker", "render"), [("types", types_table_markdown), ("mapping", mapping_table_markdown)])
def test_docs_tables_are_generated(marker: str, render: Callable[[], str]) -> None:
    text = DOC.read_text()
    found = re.search(rf"<!-- {marker}:start -->\n(.*?)\n<!-- {marker}:end -->", text, re.S)
    assert found, f"{DOC} lacks the {marker} markers"
    assert found.group(1) == render(), (
        f"{DOC.name} is stale: replace the {marker} block with the output of "
        "`python -m bmsbus.collector.protocols.aiobmsble_adapter`"
    )


# --- address resolution -----------------------------------------------------------------------------

class _Adv:
    def __init__(self, local_name: str | None, rssi: int) -> None:
        self.local_name, self.rssi = local_name, rssi


@pytest.mark.parametrize("target", ["c0:d6:3c:12:34:56", "SP17S005"])
async def test_address_or_name_is_resolved_on_every_enter(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from bleak import BleakScanner

    seen = [BLEDevice("AA:BB:CC:DD:EE:FF", "other", None), BLEDevice("C0:D6:3C:12:34:56", None, None)]
    scans = []

    async def find(wanted: Callable[[Any, Any], bool], timeout: float) -> BLEDevice | None:
        scans.append(timeout)
        advs = [_Adv("other", -50), _Adv("SP17S005", -70)]
        return next((d for d, a in zip(seen, advs, strict=True) if wanted(d, a)), None)

    monkeypatch.setattr(BleakScanner, "find_device_by_filter", find)
    cls = driver_class("jbd_bms")
    monkeypatch.setattr("aiobmsble.basebms.BleakClient", replay_client(Recording({"bms": "jbd_bms", "sequence": []}),
                                                                       cls.bms_class()))
    link = cls.make_link(target)
    for _ in range(2):
        async with link:
            assert link.bms is not None and link.bms._ble_device is seen[1]
            assert link.rssi == -70
    assert len(scans) == 2  # never a BLEDevice cached across reconnects


async def test_unseen_device_is_device_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    from bleak import BleakScanner

    from bmsbus.collector.links.base import DeviceNotFound

    async def find(wanted: Callable[[Any, Any], bool], timeout: float) -> None:
        return None

    monkeypatch.setattr(BleakScanner, "find_device_by_filter", find)
    with pytest.raises(DeviceNotFound):
        async with driver_class("neey_bms").make_link("11:22:33:44:55:66"):
            pass
