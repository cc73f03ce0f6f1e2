"""The embedded MQTT broker (amqtt) that `bmsbus stack` starts when no broker is configured.

Fine for a demo and a single machine; amqtt speaks MQTT 3.1.1 only and keeps sessions in memory,
so use Mosquitto for anything you rely on (docs/deployment.md).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import AsyncIterator

from .config import MqttConfig

log = logging.getLogger("bmsbus.broker")


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@contextlib.asynccontextmanager
async def embedded_broker(host: str = "127.0.0.1", port: int = 1883) -> AsyncIterator[MqttConfig]:
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise SystemExit("the embedded broker needs amqtt: pip install 'bmsbus-shared[broker]', "
                         "or configure `mqtt:` / pass --mqtt to use an existing broker") from None
    if not port_is_free(host, port):
        raise SystemExit(f"cannot start the embedded broker: {host}:{port} is in use. Is another broker "
                         f"running? Then pass --mqtt mqtt://{host}:{port} to use it, or --broker-port N.")
    broker = Broker({
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    })
    await broker.start()
    log.info("embedded broker listening on %s:%d", host, port)
    try:
        # amqtt holds a delivery open until the subscriber's PUBACK (5 s at most) while the publisher may be
        # waiting on its own PUBACK: acking after processing would stall the single process. Everything here
        # lives and dies in one process, so acking on receipt loses nothing more.
        yield MqttConfig(host=host, port=port, ack_after_processing=False)
    finally:
        await broker.shutdown()
