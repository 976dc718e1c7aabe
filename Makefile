# Two commands set up everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# On a machine with an NVIDIA driver (nvidia-smi on PATH) JAX's CUDA plugin is installed too, so
# Brax simulates on the GPU that torch trains on; elsewhere JAX stays CPU-only.
EXTRAS ?= test$(shell command -v nvidia-smi >/dev/null 2>&1 && echo ,cuda)

# Robot models (the Unitree Go1) come from the mujoco-menagerie package, which downloads them once;
# a local Menagerie beside the project is used instead where there is one and none was chosen.
MENAGERIE_LOCAL := $(abspath ../shared/menagerie)
ifeq ($(MENAGERIE_ROOT),)
ifneq ($(wildcard $(MENAGERIE_LOCAL)/.),)
export MENAGERIE_ROOT := $(MENAGERIE_LOCAL)
endif
endif

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	@# Headless rendering needs EGL and Mesa's software OpenGL (system libraries, not on PyPI).
	@if command -v ldconfig >/dev/null && ! ldconfig -p | grep -q 'libEGL.so.1'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri; \
	  else echo "note: videos need EGL and Mesa: sudo apt-get install libegl1 libgl1-mesa-dri"; fi; \
	fi
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "stridelab needs Python 3.11, found " + sys.version.split()[0] + " ($(PYTHON)); install python3.11 or run make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@# pip compiles every installed module to bytecode one file at a time; compileall does the
	@# same on every core (81 s -> 65 s here). A few files are for newer Pythons (torch's
	@# py312_intrinsics.py) and do not compile: pip skips them alike, so their errors are not ours.
	$(BIN)/python -m pip install --quiet --no-compile -e '.[$(EXTRAS)]'
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	touch $(STAMP)

install: $(STAMP)

# The main job: TRPO vs PPO on Brax Ant, 3 seeds each, 3M steps per run (about 18 minutes on a
# 2-core CPU, set-up included), then the report, videos of the best policies (each, and side by
# side) and TensorBoard logs in runs/demo. Started again after an interruption, it continues
# where it stopped.
demo: $(STAMP)
	$(BIN)/stridelab compare --env ant --algos trpo ppo --seeds 3 --total-steps 3000000 --out runs/demo

# One pytest worker per core (pytest-xdist), each file's tests on one worker so that a module's
# fixture (a small trained run its tests read) runs once. Compiled Brax programs: .cache/jax.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

clean:
	rm -rf $(VENV) runs .pytest_cache .cache
