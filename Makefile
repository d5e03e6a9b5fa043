# The two commands a newcomer needs:  make run   and   make test
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install run test lint bench

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/consilium serve $(ARGS)

lint: install
	$(VENV)/bin/ruff check sfu signaling media jitter tools tests
	$(VENV)/bin/mypy

test: install lint
	bash tools/ensure_chromium.sh
	bash tools/in_netns.sh $(VENV)/bin/pytest -q -p no:cacheprovider $(ARGS)

bench: install
	bash tools/in_netns.sh $(PY) -m tools.bench_forward
