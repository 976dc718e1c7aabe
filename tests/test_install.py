"""The Makefile's set-up: JAX's CUDA plugin where an NVIDIA driver is, nothing extra elsewhere."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _planned_install(path: str) -> str:
    # make by its full path: the PATH given may lack its folder (a driver's nvidia-smi often
    # sits in /usr/bin beside it).
    out = subprocess.run([shutil.which("make"), "-n", "-B", "install"], cwd=ROOT,
                         env={**os.environ, "PATH": path}, capture_output=True, text=True, check=True).stdout
    (line,) = [ln for ln in out.splitlines() if "pip install --quiet" in ln and " -e " in ln]
    return line


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_installs_jax_for_cuda_only_where_nvidia_smi_is(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 0\n")
    smi.chmod(0o755)
    plain = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                            if not (Path(p) / "nvidia-smi").exists())
    assert "-e '.[test]'" in _planned_install(plain)
    assert "-e '.[test,cuda]'" in _planned_install(f"{tmp_path}{os.pathsep}{plain}")

