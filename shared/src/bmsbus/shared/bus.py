"""The MQTT client layer: a thin wrapper over aiomqtt 2.x. Every aiomqtt import lives in this module.

- `Bus` is an async context manager: connect (with last will), publish models, subscribe, iterate.
- `run_connected()` is the reconnect loop every service uses: full-jitter exponential backoff, and
  the body is restarted on a fresh connection after the broker goes away.
- Consumers use persistent sessions (fixed client id, clean_session=False, QoS 1) so QoS 1 messages
  published while they were away are delivered when they come back. Everything here is correct on
  MQTT 3.1.1; nothing depends on MQTT 5.
- `Inbox` turns (topic, payload) into typed messages and counts what it had to skip.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Self

import aiomqtt

from .config import MqttConfig
from .models import BadMessage, BusModel, parse
from .topics import MODEL_OF_KIND, TopicRef, Topics

log = logging.getLogger("bmsbus.bus")

BusError = aiomqtt.MqttError


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool


class Backoff:
    """Capped exponential backoff with full jitter: delay n is uniform in [first*factor^n*(1-jitter), ...]."""

    def __init__(self, first: float = 1.0, factor: float = 1.8, cap: float = 60.0, jitter: float = 0.5) -> None:
        self.first, self.factor, self.cap, self.jitter = first, factor, cap, jitter
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        base = min(self.cap, self.first * self.factor ** min(self.attempt, 32))
        self.attempt += 1
        return base * random.uniform(1.0 - self.jitter, 1.0)


def _tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    if cfg.tls is None:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.tls.ca_file) if cfg.tls.ca_file else None)
    if cfg.tls.cert_file:
        ctx.load_cert_chain(str(cfg.tls.cert_file), str(cfg.tls.key_file) if cfg.tls.key_file else None)
    if cfg.tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Bus:
    def __init__(self, mqtt: MqttConfig, *, client_id: str, will: tuple[str, str] | None = None,
                 persistent: bool = False) -> None:
        self.mqtt = mqtt
        self.client_id = client_id
        self._client = aiomqtt.Client(
            mqtt.host,
            mqtt.port,
            username=mqtt.username,
            password=mqtt.password.get_secret_value() if mqtt.password else None,
            identifier=client_id,
            clean_session=not persistent,
            will=aiomqtt.Will(will[0], will[1], qos=1, retain=True) if will else None,
            keepalive=mqtt.keepalive,
            tls_context=_tls_context(mqtt),
            protocol=aiomqtt.ProtocolVersion.V311,
            timeout=10,
            max_queued_incoming_messages=10_000,
        )
        # Acknowledge a QoS 1 message only after the consumer has processed it (see messages()). A consumer
        # killed mid-stream then gets its unprocessed messages again from its persistent session, and the
        # broker's in-flight window (mosquitto: max_inflight_messages) becomes back-pressure instead of our
        # local queue overflowing. aiomqtt 2.x does not expose paho's manual_ack, so we reach its paho client.
        self._paho = self._client._client
        self._ack_after_processing = mqtt.ack_after_processing
        self._paho.manual_ack_set(self._ack_after_processing)

    async def __aenter__(self) -> Self:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(*exc)  # type: ignore[arg-type]

    async def publish(self, topic: str, payload: BusModel | str | bytes, *, qos: int = 1,
                      retain: bool = False) -> None:
        data = payload.to_json() if isinstance(payload, BusModel) else payload
        await self._client.publish(topic, data, qos=qos, retain=retain)

    async def subscribe(self, *filters: str, qos: int = 1) -> None:
        for f in filters:
            await self._client.subscribe(f, qos=qos)

    async def messages(self) -> AsyncIterator[Message]:
        """Incoming messages in order. Each is acknowledged when the consumer asks for the next one, i.e.
        after it has been handled; one the consumer never finished is redelivered after a reconnect."""
        async for m in self._client.messages:
            payload = m.payload if isinstance(m.payload, bytes) else str(m.payload or "").encode()
            yield Message(m.topic.value, payload, bool(m.retain))
            if m.qos > 0 and self._ack_after_processing:
                self._paho.ack(m.mid, m.qos)


async def run_connected(name: str, connect: Callable[[], Bus], body: Callable[[Bus], Awaitable[None]],
                        *, backoff: Backoff | None = None) -> None:
    """Run `body` on a connected bus forever, reconnecting with backoff when the broker goes away.
    Other exceptions propagate: they are bugs, not weather."""
    backoff = backoff or Backoff()
    first_failure = True
    while True:
        try:
            async with connect() as bus:
                log.info("%s: connected to %s", name, bus.mqtt.display())
                backoff.reset()
                first_failure = True
                await body(bus)
                return
        except* BusError as group:
            delay = backoff.next()
            level = logging.WARNING if first_failure else logging.DEBUG
            log.log(level, "%s: broker unreachable (%s); retrying in %.1f s", name, group.exceptions[0], delay)
            first_failure = False
            await asyncio.sleep(delay)


class Inbox:
    """Parses incoming messages of our topic tree into models; counts and logs what it must skip."""

    def __init__(self, topics: Topics, service: str) -> None:
        self.topics = topics
        self.log = logging.getLogger(f"bmsbus.{service}")
        self.bad = Counter[str]()
        self.received = Counter[str]()

    def decode(self, msg: Message) -> tuple[TopicRef, BusModel | str] | None:
        """(ref, model) for a good message; (ref, text) for status topics; None for anything skipped."""
        ref = self.topics.parse(msg.topic)
        if ref is None:
            return None
        self.received[ref.kind] += 1
        if ref.kind == "status":
            text = msg.payload.decode(errors="replace")
            if text in ("online", "offline", ""):
                return ref, text
            self.skip(ref.kind, msg.topic, f"status must be online/offline, got {text[:40]!r}")
            return None
        if not msg.payload:  # an empty retained payload clears a topic; nothing to process
            return None
        try:
            model = parse(MODEL_OF_KIND[ref.kind], msg.payload)
        except BadMessage as exc:
            self.skip(ref.kind, msg.topic, str(exc))
            return None
        return ref, model

    def skip(self, kind: str, topic: str, why: str) -> None:
        self.bad[kind] += 1
        # First few at WARNING, then every 100th, so a flood cannot fill the disk.
        n = self.bad[kind]
        if n <= 5 or n % 100 == 0:
            self.log.warning("skipped bad message #%d on %s: %s", n, topic, why)
