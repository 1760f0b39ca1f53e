# composer: the two entry points are `make demo` (set up + run the example) and `make test`
# (set up + every check and test). Both install what they need on a fresh Debian 12 machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= .cache
# Debian packages the tests need: dpkg-deb and apt fetch the Compose v2 reference binary; busybox-static
# makes the small test images; mmdebstrap/debootstrap bootstrap debian:<suite>; iproute2 for the leak checks;
# tini-static is init: true; nft holds composer's egress rules; chromium (headless) takes the e2e tests'
# screenshot of the inception stack, openssl makes their TLS 1.1 control server's certificate.
APT_PACKAGES ?= ca-certificates dpkg busybox-static mmdebstrap debootstrap iproute2 tini nftables chromium openssl
COMPOSE_V2 := $(CACHE)/peers/docker-compose
INCEPTION := stacks/inception

.PHONY: demo demo-down install apt peers check test e2e bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# composer's bytecode, written once here: where PYTHONDONTWRITEBYTECODE is set (this machine kind sets
# it) Python would otherwise compile every module again in every composer command and supervisor
# (~0.1 s a command); it still reads a cache it finds. Only changed files are compiled again. Then
# the methods @dataclass writes (composer/dataclass_cache.py: ~50 ms of a supervisor's start).
install: $(VENV)/.installed
	$(PY) -m compileall -q composer
	$(PY) -c 'import composer.dataclass_cache as c; c.warm()'

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install:$$missing" >&2; exit 1; fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The reference peer for the differential tests and benchmarks (skipped, with a reason, if this fails).
peers:
	-@bash tests/tools/fetch-compose-v2.sh $(CACHE)/peers >/dev/null 2>&1 || echo "note: Docker Compose v2 not fetched; differential tests will be skipped" >&2

check: install
	$(VENV)/bin/ruff check composer tests bench
	$(VENV)/bin/ruff format --check composer tests bench
	$(VENV)/bin/mypy

# The example: the inception stack (nginx with TLS on 443 -> WordPress on php-fpm -> MariaDB, and the
# bonus services), built from debian:bookworm and brought up with `composer up -d --build --wait`; its
# data goes to $(DATA_DIR) (the stack's default: ~/data). `make demo-down` stops it.
demo: apt install
	$(MAKE) -C $(INCEPTION) COMPOSER=$(abspath $(VENV))/bin/composer
	@$(VENV)/bin/composer -f $(INCEPTION)/srcs/docker-compose.yml ps

demo-down: install
	$(MAKE) -C $(INCEPTION) COMPOSER=$(abspath $(VENV))/bin/composer down

test: apt install peers check
	COMPOSER_COMPOSE_V2=$(abspath $(COMPOSE_V2)) $(PY) -m pytest -q

# Only the inception stack end to end (tests/e2e, as root): its screenshots land in $(CACHE)/artifacts/.
e2e: apt install
	$(PY) -m pytest -q tests/e2e

# crun and runc are only peers to compare with; the tests do not need them.
bench: apt install peers
	-@DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends crun runc >/dev/null 2>&1
	COMPOSER_COMPOSE_V2=$(abspath $(COMPOSE_V2)) $(PY) bench/config_load.py
	$(PY) bench/container_start.py
	$(PY) bench/network_setup.py
	$(PY) bench/dns.py
	$(PY) bench/ports.py
	$(PY) bench/build.py
	$(PY) bench/stack_up.py
	$(PY) bench/inception.py
	@# side by side with Docker Compose v2 where an engine runs (../shared/tools/peers/setup.sh); else it says so
	-$(PY) bench/inception_compose.py

clean:
	rm -rf $(VENV) $(CACHE) .pytest_cache .mypy_cache .ruff_cache .hypothesis
