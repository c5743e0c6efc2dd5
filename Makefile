# Two commands on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
# CPU wheel of torch (an already installed torch >= 2.1 is kept; see README "Install").
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-slow venv install clean

$(VPY):
	$(PY) -m venv $(VENV)

venv: $(VPY)
	@$(VPY) -c "import torch" 2>/dev/null || $(VPY) -m pip install -q "$(TORCH_SPEC)"

install: venv
	$(VPY) -m pip install -q -e .

demo: install
	$(VENV)/bin/sgilo demo --out demo_out

test: venv
	$(VPY) -m pip install -q -e ".[test]"
	$(VPY) -m pytest -q

test-slow: venv
	$(VPY) -m pip install -q -e ".[test]"
	$(VPY) -m pytest -q -m slow

clean:
	rm -rf demo_out .pytest_cache
