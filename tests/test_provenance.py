"""Provenance: versions, commit, machine, command line and date, without heavy imports."""

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stridelab import provenance as prov

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_is_there_and_json_ready():
    p = prov.provenance("cpu")
    assert set(p) == {"stridelab", "commit", "versions", "device", "cpu", "gpu", "host_os", "command", "date"}
    for name in ("torch", "jax", "brax", "mujoco", "gymnasium", "python"):
        assert p["versions"][name] and p["versions"][name] != "not installed", name
    assert p["device"] == "cpu" and p["cpu"]
    date = datetime.datetime.fromisoformat(p["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - date).total_seconds()) < 60
    json.dumps(p)


def test_importing_it_loads_nothing_heavy():
    code = "import sys, stridelab.provenance as p; p.provenance(); print(sorted({'torch', 'jax', 'brax'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_commit_of_the_checkout_and_its_dirty_mark():
    prov.git_commit.cache_clear()
    commit = prov.git_commit()
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        assert commit == "unknown"  # a copy outside git
        return
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    assert commit == head + ("+dirty" if dirty else "")


def test_commit_is_unknown_without_git(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(prov.subprocess, "run", no_git)
    prov.git_commit.cache_clear()
    try:
        assert prov.git_commit() == "unknown"
    finally:
        prov.git_commit.cache_clear()


def test_command_line_of_the_cli_and_of_the_api(monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(ROOT / "stridelab" / "__main__.py"), "train", "--env", "Hopper-v5"])
    assert prov.command_line() == "stridelab train --env Hopper-v5"
    with prov.recording_command("stridelab.train(env='ant')"):
        assert prov.provenance()["command"] == "stridelab.train(env='ant')"
    assert prov.command_line() == "stridelab train --env Hopper-v5"


def test_cpu_model_is_read(monkeypatch):
    assert prov.cpu_model() != ""
    if Path("/proc/cpuinfo").is_file():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.lower().startswith("model name")]
        if names:
            assert prov.cpu_model() == names[0]


@pytest.mark.parametrize("installed", [False])
def test_a_missing_package_is_said(monkeypatch, installed):
    monkeypatch.setattr(prov, "PACKAGES", ("stridelab", "no-such-package-xyz"))
    assert prov.versions()["no-such-package-xyz"] == "not installed"
