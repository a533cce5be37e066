# Berth: the README names these targets. Everything runs from a fresh clone on Debian 12 as root.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export K8S_DEB_BASE ?= /var/tmp/berth-kube

.PHONY: venv proto proto-check lint test test-fast demo bench bench-full testenv podman-up kube-up kube-down clean browser

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,kubernetes,platform]'
	touch $@

venv: $(VENV)/.installed

proto: venv
	$(PY) tools/genproto.py

proto-check: venv
	$(PY) tools/genproto.py --check

lint: venv proto-check
	$(VENV)/bin/ruff check src tests bench tools
	$(VENV)/bin/ruff format --check src tests bench tools
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

testenv:
	tools/testenv.sh up

podman-up:
	tools/podman.sh up

kube-up:
	tools/kube-apiserver.sh all

kube-down:
	tools/kube-apiserver.sh stop

# The whole suite on real components: Docker engine, private registry, kube-apiserver.
test: venv lint testenv podman-up kube-up browser
	eval "$$(tools/testenv.sh env)"; export KUBECONFIG=$(K8S_DEB_BASE)/kubeconfig BERTH_TEST_NO_SKIP=1; \
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=25

# Debian's Chromium for the console's browser tests (driven by Playwright, never a browser of its own).
browser:
	dpkg -s chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }

# The pure tests: no engine, API server, network service or child process (under 30 s on 2 cores):
# tests/unit and the runtime contract on the memory runtime.
test-fast: venv
	$(VENV)/bin/pytest -q -p no:cacheprovider --durations=10 -m "not docker and not kube" tests/unit tests/contract

demo: venv testenv
	eval "$$(tools/testenv.sh env)"; $(PY) -m berth.demo

# The bench extra (matplotlib, for the curves' plots) on top of the dev venv.
$(VENV)/.bench-installed: $(VENV)/.installed
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $@

# Every benchmark and the quick scale curves (about 5 minutes on 2 cores); the table and the
# curves' JSON and PNG land in bench/results/.
bench: $(VENV)/.bench-installed testenv
	eval "$$(tools/testenv.sh env)"; $(PY) bench/run_all.py --quick

# Everything with the full scale curves, by hand (about 20 minutes): 1,000 containers, 50 follows,
# 500 workloads, 100 agents.
bench-full: $(VENV)/.bench-installed testenv
	eval "$$(tools/testenv.sh env)"; $(PY) bench/run_all.py --full

clean:
	rm -rf $(VENV) build dist src/*.egg-info .mypy_cache .ruff_cache
