# ipsecgw: every target does its own set-up on a fresh Debian 12 machine (run as root).
#   make test   apt packages, virtualenv, editable install with the cffi build, lint, the whole suite
#   make build  rebuild the C modules in place after editing cdefs/
#   make lint   ruff
#   make demo   two ipsecgw gateways and a strongSwan site in network namespaces: ping, iperf3, list-sas

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
APT_PACKAGES := gcc make pkg-config libssl-dev libipsec-mb-dev iproute2 tcpdump tshark iputils-ping iperf3 \
	charon-systemd strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins \
	dpdk dpdk-dev libdpdk-dev nftables

.PHONY: test lint build deps venv clean bench demo

deps: .stamp-apt
.stamp-apt: Makefile
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "apt: installing $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: .stamp-apt pyproject.toml setup.py $(wildcard cdefs/*.h cdefs/*.c cdefs/*.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

build: venv
	@for b in cdefs/build_*.py; do $(PY) $$b; done

lint: venv
	$(VENV)/bin/ruff check .

test: venv lint
	$(VENV)/bin/ipsecgw caps
	$(VENV)/bin/pytest -q

# Throughput runs (pytest-benchmark); the table lands in bench/results/esp.md and esp.json.
# dpdk-test-crypto-perf (apt: dpdk-dev) adds the crypto-only ceiling when it is installed.
bench: venv
	mkdir -p bench/results
	$(VENV)/bin/pytest bench -q --benchmark-enable --benchmark-json=bench/results/raw.json -p no:cacheprovider
	$(PY) bench/report.py bench/results/raw.json --out-json bench/results/esp.json --out-md bench/results/esp.md --crypto-perf

# The README's demo: builds namespaces, runs `ipsecgw run` on two gateways plus strongSwan, shows the
# ACQUIRE, pings, iperf3 and list-sas, and tears everything down (also on Ctrl-C or failure).
demo: venv
	IPSECGW=$(abspath $(VENV))/bin/ipsecgw demo/demo.sh

clean:
	rm -rf build $(VENV) .stamp-apt *.egg-info fastpath/*.so fastpath/_*.c
