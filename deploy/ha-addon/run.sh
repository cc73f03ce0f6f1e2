#!/usr/bin/with-contenv bashio
# Start bmsbus inside the add-on: MQTT credentials from the Supervisor's service API, options from the UI.
set -euo pipefail

MQTT_SERVICE=""
if [ -n "${SUPERVISOR_TOKEN:-}" ]; then
    # {"result": "ok", "data": {"host": ..., "port": ..., "username": ..., "password": ..., "ssl": ...}}
    if ! MQTT_SERVICE="$(curl -fsS -H "Authorization: Bearer ${SUPERVISOR_TOKEN}" http://supervisor/services/mqtt)"; then
        bashio::log.warning "no MQTT service from the Supervisor; set mqtt_host in the options or install Mosquitto"
        MQTT_SERVICE=""
    fi
fi

# The generated config holds the broker password: written 0600, never logged.
printf '%s' "${MQTT_SERVICE}" | python3 -m bmsbus.ha_bridge.addon \
    --options /data/options.json --mqtt-service - --out /data/bmsbus.yaml --data-dir /data

bashio::log.info "starting bmsbus stack"
exec bmsbus stack --config /data/bmsbus.yaml
