"""bmsbus ha-bridge: Home Assistant MQTT discovery, HA-facing state topics and controls.

- `entities`: the catalog (`bmsbus.shared.quantities`) -> HA entities, through one semantic table.
- `discovery`: pure builders of device-based discovery payloads.
- `state`: pure flatteners of bus messages into the HA state topics (`<root>/ha/<id>/...`).
- `commands`: pure translation of HA commands into bus messages.
- `service`: the asyncio service (`bmsbus ha-bridge`).
- `addon`: Home Assistant add-on options -> bmsbus config.
"""
