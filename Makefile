# ipsecgw: every target does its own set-up on a fresh Debian 12 machine (run as root).
#   make test   apt packages, virtualenv, editable install with the cffi build, lint, the whole suite
#   make build  rebuild the C modules in place after editing cdefs/
#   make lint   ruff, and lint-imports (the layer contracts in pyproject.toml)
#   make fuzz   every fuzz target of tests/fuzz/ for FUZZ_SECONDS each (docs/fuzzing.md)
#   make asan   the C modules again with ASan+UBSan into build/asan/, the C-facing tests and an ESP fuzz pass
#               on them, failing on any report (tests/asan/run.py; about 5 min on 2 cores); normal build untouched
#   make demo   two ipsecgw gateways and a strongSwan site in network namespaces: ping, iperf3, list-sas
#   make soak   a gateway pair under load, rekeys and abuse for 30 minutes (MINUTES=5 for less)

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Every Debian 12 package that `make test` and `make demo` need, and the only list of them: a brand-new
# minimal root (debootstrap minbase + git, make) has none. --no-install-recommends is used, so what a
# package only recommends is named here: libstrongswan-standard-plugins carries charon's openssl and gcm
# plugins, python3-venv the ensurepip that a virtualenv needs, python3-dev the headers of the C builds.
APT_PACKAGES := python3 python3-venv python3-dev gcc make pkg-config libssl-dev libipsec-mb-dev \
	iproute2 procps ethtool nftables tcpdump tshark iputils-ping iperf3 \
	charon-systemd strongswan-swanctl libstrongswan-standard-plugins libcharon-extra-plugins \
	libstrongswan-extra-plugins dpdk dpdk-dev libdpdk-dev systemd
# what the virtualenv must be able to import before it is trusted (a half-made one is rebuilt)
VENV_CHECK := import cffi, cryptography, numpy, yaml, pytest, scapy, importlinter, atheris, control.cli, fastpath

.PHONY: test lint build deps venv clean bench demo fuzz asan soak

# Checked on every run (one dpkg-query, well under a second when nothing is missing), so a package
# removed since, or an apt run that was interrupted, is repaired rather than trusted through a stamp.
deps:
	@missing=$$(dpkg-query -W -f='$${db:Status-Abbrev} $${Package}\n' $(APT_PACKAGES) 2>/dev/null | \
		awk '$$1 == "ii" {ok[$$2] = 1} END {n = split("$(APT_PACKAGES)", want, " "); \
		for (i = 1; i <= n; i++) if (!(want[i] in ok)) printf "%s ", want[i]}'); \
	if [ -n "$$missing" ]; then \
		[ "$$(id -u)" = 0 ] || { echo "make deps: missing apt packages: $$missing(run as root to install them)"; exit 1; }; \
		echo "apt: installing $$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		dpkg --configure -a && apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends $$missing >/dev/null || exit 1; \
	fi

# The venv is trusted only when it can import what the suite needs. One without pip (an interrupted or
# failed `python3 -m venv`) is removed and made again; one with pip (a pip run cut short, a deleted
# package) gets the install run again.
venv: deps
	@$(PY) -c '$(VENV_CHECK)' 2>/dev/null || rm -f $(VENV)/.stamp
	@$(MAKE) --no-print-directory $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml setup.py $(wildcard cdefs/*.py cdefs/*/*.h cdefs/*/*.c cdefs/*/*.py)
	@$(PY) -m pip --version >/dev/null 2>&1 || { echo "venv: creating $(VENV)"; rm -rf $(VENV); \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q --upgrade pip; }
	$(PY) -m pip install -q -e '.[test]'
	@$(PY) -c '$(VENV_CHECK)'
	@touch $@

build: venv
	@for b in cdefs/*/build_*.py; do $(PY) $$b; done

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

test: venv lint
	$(VENV)/bin/ipsecgw caps
	$(VENV)/bin/pytest -q

# Throughput runs (pytest-benchmark); the table lands in bench/results/esp.md and esp.json.
# dpdk-test-crypto-perf (apt: dpdk-dev) adds the crypto-only ceiling when it is installed.
bench: venv
	mkdir -p bench/results
	$(VENV)/bin/pytest bench -q --benchmark-enable --benchmark-json=bench/results/raw.json -p no:cacheprovider
	$(PY) bench/report.py bench/results/raw.json --out-json bench/results/esp.json --out-md bench/results/esp.md --crypto-perf

# Longer fuzzing than make test's bounded pass: each target for FUZZ_SECONDS, its corpus kept in .fuzz-corpus/
# so the next run starts where this one stopped; crashers land in tests/fuzz/crashers/<target>/.
FUZZ_SECONDS ?= 300
fuzz: venv
	$(PY) tests/fuzz/run.py all --seconds $(FUZZ_SECONDS) --corpus .fuzz-corpus

# The C code under AddressSanitizer and UBSan (docs/architecture.md, Tests): tests/asan/run.py builds the
# sanitized modules into build/asan/, runs the C-facing tests and the ESP fuzz pass on them; any report fails.
ASAN_FUZZ_SECONDS ?= 60
asan: venv
	$(PY) tests/asan/run.py --fuzz-seconds $(ASAN_FUZZ_SECONDS)

# The README's demo: builds namespaces, runs `ipsecgw run` on two gateways plus strongSwan, shows the
# ACQUIRE, pings, iperf3 and list-sas, and tears everything down (also on Ctrl-C or failure).
demo: venv
	IPSECGW=$(abspath $(VENV))/bin/ipsecgw demo/demo.sh

# The soak (docs/soak.md): a gateway pair under pings, iperf3, rekeys and abuse for MINUTES (default 30);
# prints a table, the verdict and where its JSON and SVG went; exits non-zero when it FAILED.
MINUTES ?= 30
soak: venv
	$(PY) tests/soak/run_soak.py --minutes $(MINUTES) $(SOAK_ARGS)

clean:
	rm -rf build $(VENV) *.egg-info fastpath/*.so fastpath/_*.c
