# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# torch (an already installed torch >= 2.1 is kept; see README.md, section "Install").
TORCH_SPEC ?= torch==2.13.0
# pip runs again only when pyproject.toml changes (stamp files in .venv).
INSTALLED := $(VENV)/.sgilo-installed
TEST_INSTALLED := $(VENV)/.sgilo-test-installed

.PHONY: demo test test-slow test-app venv install clean

$(VPY):
	$(PY) -m venv $(VENV)

venv: $(VPY)
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_SPEC)"

$(INSTALLED): pyproject.toml | venv
	$(VPY) -m pip install -q -e .
	@touch $@

$(TEST_INSTALLED): pyproject.toml | venv
	$(VPY) -m pip install -q -e ".[test]"
	@touch $@

install: venv $(INSTALLED)

demo: install
	$(VENV)/bin/sgilo demo --out demo_out --overwrite

test: venv $(TEST_INSTALLED)
	$(VPY) -m pytest -q

test-slow: venv $(TEST_INSTALLED)
	$(VPY) -m pytest -q -m slow

# The web page (`sgilo serve`) in a real headless browser: the `app` extra (Gradio) plus Debian's chromium and
# chromium-driver (installed when apt-get is available and they are missing); the test skips itself without them.
test-app: venv $(TEST_INSTALLED)
	$(VPY) -m pip install -q -e ".[test,app]"
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || \
		{ command -v apt-get >/dev/null && apt-get update -qq && apt-get install -y -qq chromium chromium-driver; } || \
		echo "chromium not installed: the browser test will be skipped"
	$(VPY) -m pytest -q -m slow tests/test_serve.py

clean:
	rm -rf demo_out .pytest_cache
