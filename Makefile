# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv with plain pip.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/pip -q --disable-pip-version-check

.PHONY: demo test venv clean bench

# Installs are stamped so a second `make test` does not reinstall; editing pyproject.toml re-installs.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]' > $(VENV)/pip.log 2>&1 || (tail -n 40 $(VENV)/pip.log; exit 1)
	$(BIN)/python -c "import lit_vision, torch, lightning, timm"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(BIN)/lit-vision fit --config experiments/classification/quickstart.yaml

test: venv
	$(BIN)/python -m pytest tests -q --durations=30

bench: venv
	$(BIN)/python benchmarks/classification_throughput.py

clean:
	rm -rf $(VENV) runs lightning_logs wandb .pytest_cache
