# Set-up and the two entry points of the README: `make run` and `make test`.
# Both create .venv on first use and reinstall when pyproject.toml changes.
VENV    ?= .venv
PYTHON  ?= python3
PROMPT  ?= draw a small red circle at the top-left on a black background
OUT     ?= outputs
PYTEST_ARGS ?=

export HF_HUB_OFFLINE = 1

.PHONY: install run test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/anygen generate "$(PROMPT)" --out $(OUT)

test: install
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
