# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# torch (an already installed torch >= 2.1 is kept; see README.md, section "Install").
TORCH_SPEC ?= torch==2.13.0
# pip runs again only when pyproject.toml changes (stamp files in .venv).
INSTALLED := $(VENV)/.sgilo-installed
TEST_INSTALLED := $(VENV)/.sgilo-test-installed

.PHONY: demo test test-slow venv install clean

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

clean:
	rm -rf demo_out .pytest_cache
