# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job: TRPO vs PPO on Brax Ant, 3 seeds each, 1.5M steps per run (about 13 minutes on
# a 2-core CPU), then the report, videos of the best policies and TensorBoard logs in runs/demo.
# Started again after an interruption, it continues where it stopped.
demo: $(STAMP)
	$(BIN)/stridelab compare --env ant --algos trpo ppo --seeds 3 --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
