#!/usr/bin/with-contenv bashio
# Start bmsbus inside the add-on: MQTT credentials from the Supervisor's service API, options from the UI.
# BMSBUS_DATA_DIR / BMSBUS_CONFIG_DIR exist for tests only; the Supervisor mounts /data and /config.
set -euo pipefail

DATA_DIR="${BMSBUS_DATA_DIR:-/data}"
CONFIG_DIR="${BMSBUS_CONFIG_DIR:-/config}"

MQTT_SERVICE=""
if [ -n "${SUPERVISOR_TOKEN:-}" ]; then
    # {"result": "ok", "data": {"host": ..., "port": ..., "username": ..., "password": ..., "ssl": ...}}
    if ! MQTT_SERVICE="$(curl -fsS -H "Authorization: Bearer ${SUPERVISOR_TOKEN}" http://supervisor/services/mqtt)"; then
        bashio::log.warning "no MQTT service from the Supervisor; set mqtt_host in the options or install Mosquitto"
        MQTT_SERVICE=""
    fi
fi

# The generated config holds the broker password: written 0600, never logged. A bad option stops here, named.
printf '%s' "${MQTT_SERVICE}" | python3 -m bmsbus.ha_bridge.addon --require-mqtt \
    --options "${DATA_DIR}/options.json" --mqtt-service - --out "${DATA_DIR}/bmsbus.yaml" \
    --data-dir "${DATA_DIR}" --config-dir "${CONFIG_DIR}"

bashio::log.info "starting bmsbus stack"
exec bmsbus stack --config "${DATA_DIR}/bmsbus.yaml"
