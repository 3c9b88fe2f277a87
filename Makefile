# Set-up and the two entry points of the README: `make run` and `make test`.
# Both create .venv on first use and reinstall when pyproject.toml changes.
VENV    ?= .venv
PYTHON  ?= python3
PROMPT  ?= draw a small red circle at the top-left on a black background
OUT     ?= outputs
PYTEST_ARGS ?=

export HF_HUB_OFFLINE = 1

.PHONY: install run test chromium clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/anygen generate "$(PROMPT)" --out $(OUT)

test: install chromium
	$(VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

# The demo's browser test drives Debian's headless Chromium (Playwright's own browser download is not used).
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "The demo's browser test needs /usr/bin/chromium: sudo apt-get install chromium" >&2; exit 1; fi; }

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
