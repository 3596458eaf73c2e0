# Developer entry points. `make test` is the full suite that CI runs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIOS ?= preflight docker nvidia_driver inference nvidia_container_toolkit monitoring grafana weights
# The weights role's core shares its messages with `oneclick bundle build`.
PY_SOURCES := $(shell git ls-files --cached --others --exclude-standard 'oneclick/*.py' 'roles/weights/module_utils/*.py')
LOCALE := oneclick/locale

.PHONY: test venv lab lint unit molecule e2e lab-up lab-down translations clean

test: venv lab lint unit molecule e2e

$(BIN)/oneclick: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/oneclick

# Docker engine, the Debian 12 systemd base image and the fixture images.
lab:
	bash tests/lab/setup.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint

unit: venv
	$(BIN)/pytest tests/unit

molecule: venv lab
	set -e; for scenario in $(SCENARIOS); do \
		PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/molecule test -s $$scenario; \
	done

e2e: venv lab
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pytest tests/integration tests/e2e

# A throwaway lab host with the whole appliance installed in it; prints the endpoint.
lab-up: venv lab
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python tests/lab/labhost.py up

lab-down: venv
	$(BIN)/python tests/lab/labhost.py down

# Refresh the message catalogue after changing user-facing text, then fill
# in the new zh_CN entries of $(LOCALE)/zh_CN/LC_MESSAGES/oneclick.po.
translations:
	xgettext --language=Python --keyword=_ --keyword=ngettext:1,2 --from-code=UTF-8 \
		--sort-output --no-location --package-name=oneclick -o $(LOCALE)/oneclick.pot.tmp $(PY_SOURCES)
	msgcat --use-first --sort-output -o $(LOCALE)/oneclick.pot $(LOCALE)/oneclick.pot.tmp $(LOCALE)/external.pot
	rm $(LOCALE)/oneclick.pot.tmp
	msgmerge --quiet --update --backup=none --no-fuzzy-matching --sort-output \
		$(LOCALE)/zh_CN/LC_MESSAGES/oneclick.po $(LOCALE)/oneclick.pot
	msgattrib --no-obsolete -o $(LOCALE)/zh_CN/LC_MESSAGES/oneclick.po $(LOCALE)/zh_CN/LC_MESSAGES/oneclick.po
	msgfmt --check -o $(LOCALE)/zh_CN/LC_MESSAGES/oneclick.mo $(LOCALE)/zh_CN/LC_MESSAGES/oneclick.po

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
