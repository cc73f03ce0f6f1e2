"""Which transport a device config gets (no I/O: links are only built, never entered)."""

from __future__ import annotations

import pytest

from bmsbus.collector import protocols
from bmsbus.collector.links.base import LinkError
from bmsbus.collector.links.ble import BleLink
from bmsbus.collector.links.esphome import EsphomeLink, ProxyConfig
from bmsbus.collector.links.factory import open_link
from bmsbus.collector.links.serial import SerialLink
from bmsbus.shared.config import ConfigError, DeviceConfig, parse_config

BY_ID = "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0"


def dev(**kw: object) -> DeviceConfig:
    return DeviceConfig(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("address", [BY_ID, "/dev/ttyUSB0", "COM3", "socket://10.0.0.7:8899", "rfc2217://gw:4000"])
def test_paths_and_urls_are_serial(address: str) -> None:
    link = open_link(dev(type="jk_uart", address=address), protocols.get("jk_uart"))
    assert isinstance(link, SerialLink) and link.port == address and link.spec.baudrate == 115200


def test_batmon_style_serial_and_line_overrides() -> None:
    link = open_link(dev(type="jk_uart", address="serial", alias="pack1", adapter=BY_ID,
                         options={"baudrate": 9600, "parity": "E"}), protocols.get("jk_uart"))
    assert isinstance(link, SerialLink) and link.port == BY_ID
    assert (link.spec.baudrate, link.spec.parity) == (9600, "E")
    with pytest.raises(LinkError, match="adapter"):
        open_link(dev(type="jk_uart", address="serial", alias="pack1"), protocols.get("jk_uart"))


def test_ble_gets_adapter_and_pin() -> None:
    link = open_link(dev(type="jk", address="C8:47:8C:E4:54:0F", adapter="hci1", pin="123456"), protocols.get("jk"))
    assert isinstance(link, BleLink)
    assert (link.address, link.adapter, link.pin, link.spec.service) == ("C8:47:8C:E4:54:0F", "hci1", "123456", "ffe0")
    assert isinstance(open_link(dev(type="jk", address="JK_B2A24S15P"), protocols.get("jk")), BleLink)


def test_esphome_needs_the_collectors_proxies() -> None:
    explicit = open_link(dev(type="jk", address="JK_X", transport="esphome"), protocols.get("jk"),
                         proxies=[ProxyConfig("p1")])
    assert isinstance(explicit, EsphomeLink) and explicit.proxy_configs == (ProxyConfig("p1"),)
    with pytest.raises(LinkError, match="no ESPHome proxies"):
        open_link(dev(type="jk", address="JK_X", transport="esphome"), protocols.get("jk"))


@pytest.mark.parametrize(("type_", "address", "match"), [
    ("jk", "/dev/ttyUSB0", "BLE protocol"),
    ("jk_uart", "C8:47:8C:E4:54:0F", "needs a serial port"),
])
def test_impossible_combinations_are_clear(type_: str, address: str, match: str) -> None:
    with pytest.raises(LinkError, match=match):
        open_link(dev(type=type_, address=address), protocols.get(type_))


def test_unknown_transport() -> None:
    with pytest.raises(ConfigError, match=r"devices\[0\].transport: must be one of 'auto', 'ble', 'esphome' or 'serial'"):
        parse_config({"devices": [{"type": "jk", "address": "JK_X", "transport": "wifi"}]})


def test_aiobmsble_types_bring_their_own_link() -> None:
    name = next((n for n, e in protocols.REGISTRY.items() if getattr(e.driver, "owns_transport", False)), None)
    if name is None:
        pytest.skip("no aiobmsble-backed types registered")
    link = open_link(dev(type=name, address="AA:BB:CC:DD:EE:FF"), protocols.get(name))
    assert link.kind == "aiobmsble"


def test_transport_and_proxy_fields_with_the_collectors_proxies() -> None:
    from bmsbus.collector.links.factory import proxy_configs
    from bmsbus.shared.config import parse_config

    cfg = parse_config({"collector": {"esphome_proxies": [
        {"name": "garage", "host": "10.0.0.9", "noise_psk": "k" * 44}, {"host": "10.0.0.10", "port": 6054}]},
        "devices": [{"type": "jk", "address": "C8:47:8C:E4:54:0F", "transport": "esphome", "proxy": "garage"}]})
    proxies = proxy_configs(cfg.collector.esphome_proxies)
    assert proxies == [ProxyConfig("10.0.0.9", 6053, "k" * 44, None, "garage"), ProxyConfig("10.0.0.10", 6054)]
    link = open_link(cfg.devices[0], protocols.get("jk"), proxies=proxies)
    assert isinstance(link, EsphomeLink) and link.only == "garage" and link.proxy_configs == tuple(proxies)
    # The collector's pool is keyed by these values: converting the config again finds the same pool.
    assert tuple(proxy_configs(cfg.collector.esphome_proxies)) == link.proxy_configs


def test_config_problems_without_building_a_link() -> None:
    from bmsbus.collector.links.factory import config_problems

    jk = protocols.get("jk")
    assert config_problems(dev(type="jk", address="JK_X"), jk) == []
    assert config_problems(dev(type="jk", address="JK_X", transport="esphome"), jk, [{"host": "h", "name": "p"}]) == []
    assert config_problems(dev(type="jk", address="JK_X", transport="esphome", proxy="q"), jk,
                           [{"host": "h", "name": "p"}]) == [("proxy", "no ESPHome proxy named 'q'; allowed: p")]
    assert config_problems(dev(type="jk", address="JK_X", transport="serial"), jk) == [
        ("transport", "jk is a BLE protocol; it cannot run over a serial port ('JK_X')")]
    name = next((n for n, e in protocols.REGISTRY.items() if getattr(e.driver, "owns_transport", False)), None)
    if name is not None:
        assert config_problems(dev(type=name, address="AA:BB:CC:DD:EE:FF", transport="esphome"),
                               protocols.get(name)) == [
            ("transport", f"{name} uses its own BLE connection on this host; allowed: auto, ble")]
