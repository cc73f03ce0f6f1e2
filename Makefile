# bmsbus: `make demo` runs the whole system on this machine, `make test` runs the test suite.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
DISTS := shared services/collector services/aggregator services/ha_bridge services/influx_writer
STAMP := $(VENV)/.stamp-setup
SYSTEM_PACKAGES := mosquitto socat victoria-metrics dbus-daemon

.PHONY: setup demo test system-deps bench clean

setup: $(STAMP)

$(STAMP): constraints.txt requirements-test.txt $(foreach d,$(DISTS),$(d)/pyproject.toml)
	@python=$$(scripts/find-python) || exit 1; \
	 if [ ! -x $(PY) ]; then echo "creating $(VENV) with $$python"; "$$python" -m venv $(VENV) || exit 1; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e 'shared[broker]' $(foreach d,$(filter-out shared,$(DISTS)),-e $(d)) -r requirements-test.txt
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/bmsbus stack --config examples/demo.yaml --view

# Installs missing Debian packages the tests need when running as root; otherwise says what to run.
system-deps:
	@missing=""; \
	 for cmd in mosquitto:mosquitto socat:socat victoria-metrics:victoria-metrics dbus-daemon:dbus-daemon; do \
	   command -v $${cmd%%:*} >/dev/null 2>&1 || missing="$$missing $${cmd##*:}"; \
	 done; \
	 if [ -n "$$missing" ]; then \
	   if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	     echo "installing:$$missing"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	   else \
	     echo "tests need these packages:$$missing"; echo "run: sudo apt-get install -y$$missing"; exit 1; \
	   fi; \
	 fi

test: setup system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/codecs.py

clean:
	rm -rf $(VENV) .pytest_cache
