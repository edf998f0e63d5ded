# tripletlab: every target does its own set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup test bench demo clean

setup: $(STAMP)

# Re-install when the declared dependencies or the pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# the second peer (sentence-transformers) comes with the optional extra `peers`, installed here only
bench: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e ".[peers]"
	$(PY) -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,mean,rounds

demo: $(STAMP)
	$(VENV)/bin/tripletlab run ablations/grids/demo.toml --out results/demo
	$(VENV)/bin/tripletlab report results/demo

clean:
	rm -rf $(VENV) results .pytest_cache .benchmarks
