"""Victron SmartShunt: per-characteristic decoding, N/A markers, tagged values, keep-alive, CharLink driver."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from partb_util import batmon, check_chunkings, check_prefixes, expect_error, frames, garbage, quantized_state

from bmsbus.collector.codec import FramingError, UnsupportedFrame, UsageError
from bmsbus.collector.driver import DriverOptions
from bmsbus.collector.links.emulated import EmulatedLink
from bmsbus.collector.protocols import REGISTRY
from bmsbus.collector.protocols.victron import codec
from bmsbus.collector.protocols.victron.driver import VictronDriver
from bmsbus.collector.protocols.victron.emulator import VictronEmulator
from bmsbus.collector.protocols.victron.gatt import CharLink, EmulatedCharLink

def spec_of_entry(entry: dict) -> codec.CharSpec:
    prefix = entry["expected"]["char"].split()[0]
    spec = codec.spec_of(prefix)
    assert spec.uuid.startswith(prefix)
    return spec


@pytest.mark.parametrize("entry", batmon("victron"), ids=lambda e: e["expected"]["char"] + ":" + e["hex"])
def test_batmon_vectors(entry: dict) -> None:
    """batmon negates the current (+ = discharge); the wire and bmsbus are + = charging."""
    spec = spec_of_entry(entry)
    value, want = bytes.fromhex(entry["hex"]), entry["expected"]
    if entry["direction"] == "request":
        assert spec is codec.KEEPALIVE and value == codec.KEEPALIVE_VALUE
        assert int.from_bytes(value, "little") == want["value_ms"]
        return
    got = codec.decode_value(spec.uuid, value)
    if want.get("value") == "N/A sentinel":
        assert got == {}
    elif "victron_sign_value_a" in want:
        assert got == {"current": want["victron_sign_value_a"]} and want["batmon_value_a"] == -got["current"]
    else:
        (v,) = [x for k, x in want.items() if k.startswith("value")]
        assert got == {spec.key: v}


def test_uuids() -> None:
    assert codec.SERVICE == "65970000-4bda-4c1e-af4b-551c4cf74769"
    assert codec.prefix_of(codec.SOC.uuid) == 0x65970FFF == codec.prefix_of("65970fff")
    with pytest.raises(UsageError):
        codec.prefix_of("65970fff-0000-1000-8000-00805f9b34fb")
    with pytest.raises(UnsupportedFrame):
        codec.spec_of("6597abcd")
    with pytest.raises(FramingError):
        codec.decode_value(codec.VOLTAGE.uuid, b"\x01\x02\x03")


def test_to_reading_consumed_needs_capacity() -> None:
    values = {"voltage": 13.2, "consumed_ah": -12.5}
    assert codec.to_reading(values) == {"voltage": 13.2}
    assert codec.to_reading(values, 100.0) == {"voltage": 13.2, "capacity": 100.0, "charge": 87.5}


TAGGED = codec.tag(codec.VOLTAGE, b"\xd2\x04") + codec.tag(codec.CURRENT, bytes.fromhex("c4090000"))


def test_tagged_stream() -> None:
    check_chunkings(codec.TaggedAssembler, TAGGED)
    check_prefixes(codec.TaggedAssembler, TAGGED[:6])
    assert codec.decode([TAGGED]) == [
        {"frame_type": "6597ed8d", "characteristic": "voltage", "voltage": 12.34},
        {"frame_type": "6597ed8c", "characteristic": "current", "current": 2.5}]
    expect_error(codec.TaggedAssembler, b"\x12\x34\x56\x78\x9a" + TAGGED, FramingError, 2)


state_st = st.builds(
    lambda cells, cur, soc, charge: quantized_state(cells, cur, [], soc, charge=charge / 10, capacity=100.0),
    st.lists(st.integers(1000, 4000), min_size=1, max_size=16), st.integers(-100000, 100000), st.integers(0, 100),
    st.integers(0, 1000))


@settings(max_examples=200, deadline=None)
@given(state_st)
def test_round_trip(state) -> None:  # type: ignore[no-untyped-def]
    e = VictronEmulator(state)
    values: dict = {}
    for spec in codec.VALUES:
        (reply,) = e.receive(codec.tag(spec))
        (frame,), errors = frames(codec.TaggedAssembler(), [reply])
        assert not errors and frame.kind == spec.prefix
        values.update(codec.decode_value(spec.prefix, frame.raw[codec.TAG_LEN:]))
    r = codec.to_reading(values, state.capacity)
    assert r["voltage"] == pytest.approx(state.voltage, abs=0.0051)  # 10 mV steps
    assert r["current"] == pytest.approx(state.current, abs=1e-9)
    assert abs(r["power"] - state.power) <= 0.51 or abs(state.power) > 32767  # whole watts
    assert r["soc"] == state.soc and r["charge"] == pytest.approx(state.charge)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.integers(0, 1000))
def test_garbage_never_escapes(data: bytes, seed: int) -> None:
    garbage(codec.TaggedAssembler, data, seed)
    garbage(codec.TaggedAssembler, codec.tag(codec.SOC) + data, seed)
    REGISTRY["victron"].decode([data])  # type: ignore[misc]
    VictronEmulator(quantized_state([3300], 0, [], 50)).receive(data)


def test_declares_pairing_and_characteristics() -> None:
    entry = REGISTRY["victron"]
    assert entry.driver.requires_pairing is True  # type: ignore[attr-defined]
    assert entry.ble is not None and entry.ble.service == codec.SERVICE and entry.ble.write == codec.KEEPALIVE.uuid
    assert set(entry.driver.characteristics) == {c.uuid for c in codec.VALUES}  # type: ignore[attr-defined]


@pytest.mark.parametrize("link_cls", [EmulatedCharLink, EmulatedLink], ids=["charlink", "in-band"])
async def test_driver_reads_state(link_cls: type) -> None:
    state = quantized_state([3300, 3310, 3320, 3330], 420, [], 87, charge=87.0, capacity=100.0)
    emulator = VictronEmulator(state)
    async with link_cls(emulator, mtu=20, tick_period=0.05) as link:
        driver = VictronDriver(link, DriverOptions(request_timeout=2.0, options={"capacity_ah": 100, "max_age": 0}))
        info = await driver.open()
        assert info.manufacturer == "Victron Energy"
        r = await driver.read()
        assert r == {"voltage": 13.26, "current": 4.2, "power": round(13.26 * 4.2), "soc": 87.0, "capacity": 100.0,
                     "charge": 87.0}
        emulator.soc_available = False
        state.current = -1.5
        r = await driver.read()
        assert "soc" not in r and r["current"] == -1.5  # N/A is absent, never a stale value
        assert emulator.keepalive_writes == 1
        if isinstance(link, CharLink):
            assert link.notifying == set(VictronDriver.characteristics)
            assert link.writes == [(codec.KEEPALIVE.uuid, codec.KEEPALIVE_VALUE)]


async def test_keepalive_and_notifications_in_background() -> None:
    state = quantized_state([3300, 3300, 3300, 3300], 100, [], 50)
    emulator = VictronEmulator(state)
    async with EmulatedCharLink(emulator, mtu=20, tick_period=0.02) as link:
        driver = VictronDriver(link, DriverOptions(request_timeout=1.0, options={"keepalive_ms": 100}))
        driver.keepalive_interval = 0.05  # type: ignore[misc]
        await driver.open()
        task = asyncio.create_task(driver.background())
        await asyncio.sleep(0.1)
        state.current = -7.25
        await asyncio.sleep(0.3)
        assert driver.values["current"] == -7.25  # via a notification, no read
        assert emulator.keepalive_writes >= 4
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        r = await driver.read()
        assert r["current"] == -7.25


async def test_shunt_goes_quiet_without_keepalive() -> None:
    state = quantized_state([3300], 100, [], 50)
    emulator = VictronEmulator(state)
    assert emulator.tick(1000.0) == []  # never kept alive
    emulator.receive(codec.tag(codec.KEEPALIVE, (100).to_bytes(2, "little")))
    assert len(emulator.tick(1000.0)) == len(codec.VALUES)
    state.current = 2.0
    assert [f[:4] for f in emulator.tick(1000.05)] == [codec.tag(codec.CURRENT), codec.tag(codec.POWER)]
    state.current = 3.0
    assert emulator.tick(1000.2) == []  # 100 ms keep-alive expired


class _ByteLink(EmulatedLink):
    kind = "ble"  # a plain byte transport: it would write tags into the keep-alive characteristic


async def test_driver_refuses_a_plain_byte_transport() -> None:
    from bmsbus.collector.links.base import LinkError

    async with _ByteLink(VictronEmulator(quantized_state([3300], 0, [], 50))) as link:
        with pytest.raises(LinkError, match="CharLink"):
            await VictronDriver(link).open()
