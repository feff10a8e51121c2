# ModelGate: every command a person or CI needs. Each target sets up what it needs on first run.
# Two toolchains, one on top of the other:
#   runtime  (synth, diff, deploy, bootstrap; the CI/CD Synth step): requirements.txt + the pinned CDK CLI (npm).
#            No apt, no torch: CodeBuild's Ubuntu image has neither Debian's package names nor a need for them.
#   setup    (test, demo, bench, lint): runtime + requirements-dev.txt, requirements-nodeps.txt, the editable
#            `modelgate` CLI and the Debian packages of the local stand-ins (system-packages.txt).

SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
ENV ?=

# jsii prints a large banner on every synth under Node 20 (end of life); it is noise, not an error.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: runtime setup demo test bench synth lint format deploy bootstrap diff clean

$(VENV)/.runtime: requirements.txt
	@test -n "$(PYTHON)" || { echo "need Python 3.11 (python3.11 or python3) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed: $(VENV)/.runtime requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .  # `modelgate` CLI
	touch $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

.build/.system-packages: system-packages.txt scripts/system-packages.sh
	scripts/system-packages.sh
	mkdir -p .build && touch $@

runtime: $(VENV)/.runtime node_modules/.installed

setup: runtime $(VENV)/.installed .build/.system-packages

demo: setup
	$(PY) -m demo $(ARGS)

# -n 3 on 2 cores: a third of the suite's time is waiting (servers starting, subprocesses, uv, the browser), not
# computing; measured on 2 cores: -n 2 9 min 19 s, -n 3 6 min 57 s, -n 4 7 min 3 s. --durations: where the 10-minute
# budget goes, in every log.
test: setup
	$(PY) -m pytest -n 3 --durations=30 $(ARGS)

bench: setup
	$(PY) -m bench $(ARGS)

synth: runtime
	npx cdk synth --quiet $(if $(ENV),-c env=$(ENV))

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Real AWS: `make bootstrap ENV=<env>` once per account/region, then `make deploy ENV=<env>` (<env>: a name of
# the promotion chain, config `environments:`; the first one first).
bootstrap: runtime
	@test -n "$(ENV)" || { echo "usage: make bootstrap ENV=<environment of the chain> [TRUST=<cicd account id>]"; exit 2; }
	npx cdk bootstrap -c env=$(ENV) $(if $(TRUST),--trust $(TRUST) --cloudformation-execution-policies arn:aws:iam::aws:policy/AdministratorAccess)

deploy: runtime
	@test -n "$(ENV)" || { echo "usage: make deploy ENV=<environment of the chain>"; exit 2; }
	@$(PY) -m infra.placeholders $(ENV)
	$(PY) -m infra.preflight --env $(ENV)
	npx cdk deploy -c env=$(ENV) "$$($(PY) -c 'from infra.config import load_config; print(load_config().project.name)')-$(ENV)/*" $(ARGS)
	$(PY) -m infra.preflight --env $(ENV) --after

diff: runtime
	@test -n "$(ENV)" || { echo "usage: make diff ENV=<environment of the chain>"; exit 2; }
	npx cdk diff -c env=$(ENV) $(ARGS)

clean:
	rm -rf cdk.out .build .demo .pytest_cache .ruff_cache
