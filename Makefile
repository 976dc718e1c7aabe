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

# The main job. Until `stridelab compare` lands: PPO on Brax Ant with its default budget, then
# a deterministic evaluation of the trained policy.
demo: $(STAMP)
	$(BIN)/stridelab train --algo ppo --env ant --run-dir runs/demo/ppo_s1
	$(BIN)/stridelab eval runs/demo/ppo_s1 --episodes 16
	@echo "TensorBoard: $(BIN)/tensorboard --logdir runs/demo"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
