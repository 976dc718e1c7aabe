"""Log every XLA compilation of any Python process that has this folder on ``PYTHONPATH``: one
TSV line per program (pid, seconds, program, devices, the pytest test that caused it, the
program's signature) to ``$COMPILE_LOG``, per process the seconds JAX spent tracing and
lowering (``jax.monitoring`` events), and each process's own CPU seconds and command line when
it exits (a process killed by a signal has none). Where a test suite's time goes
(docs/benchmarks.md, "Test suite"):

    PYTHONPATH=benchmarks/compile_log COMPILE_LOG=/tmp/compiles.tsv STRIDELAB_JAX_CACHE=/tmp/empty-cache \\
        python -m pytest -q -n auto --dist loadfile
    python benchmarks/compile_log/summary.py /tmp/compiles.tsv

Subprocesses inherit both variables, and ``PYTEST_CURRENT_TEST`` names their test.
"""

import atexit
import importlib.abc
import importlib.util
import os
import sys
import time

_OUT = os.environ.get("COMPILE_LOG", "compiles.tsv")


def _write(*fields: object, test: str | None = None) -> None:
    test = test or os.environ.get("PYTEST_CURRENT_TEST", "-").split(" ")[0]
    with open(_OUT, "a") as f:
        f.write("\t".join(str(x) for x in (os.getpid(), *fields, test)) + "\n")


def _signature(computation) -> tuple[str, str]:
    from jax._src.lib.mlir import ir

    name = ir.StringAttr(computation.operation.attributes["sym_name"]).value
    for op in computation.body.operations:
        if ir.StringAttr(op.attributes["sym_name"]).value == "main":
            return name, str(op.attributes["function_type"])[:400]
    return name, "?"


def _install(compiler) -> None:
    from jax import monitoring

    compile_or_get_cached = compiler.compile_or_get_cached

    def logged(backend, computation, devices, *args, **kwargs):
        start = time.perf_counter()
        out = compile_or_get_cached(backend, computation, devices, *args, **kwargs)
        _write("compile", f"{time.perf_counter() - start:.3f}", *_signature(computation), getattr(devices, "size", "?"))
        return out

    def phase(event: str, seconds: float, **_: object) -> None:
        if event.endswith(("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration")):
            _write(event.rsplit("/", 1)[-1], f"{seconds:.3f}", "-", "-", "-")

    compiler.compile_or_get_cached = logged  # pxla calls it through the module
    monitoring.register_event_duration_secs_listener(phase)


class _AfterCompilerImport(importlib.abc.MetaPathFinder):
    """Installs the log once ``jax._src.compiler`` has been imported (JAX itself stays lazy)."""

    def find_spec(self, name, path, target=None):
        if name != "jax._src.compiler":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        exec_module = spec.loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            _install(module)

        spec.loader.exec_module = exec_then_install
        return spec


sys.meta_path.insert(0, _AfterCompilerImport())


_INHERITED_WORKER = "PYTEST_XDIST_WORKER" in os.environ  # a test's subprocess, not the worker itself


def _log_process() -> None:
    t = os.times()
    # pytest itself and its xdist workers: not one test's process
    worker = not _INHERITED_WORKER and "PYTEST_XDIST_WORKER" in os.environ
    runner = worker or "pytest" in sys.argv[0] or sys.argv[1:2] == ["pytest"]
    _write("process", f"{t.user + t.system:.3f}", " ".join(sys.argv[:6])[:200].replace("\t", " "), "-", "-",
           test="(pytest and its workers)" if runner else None)


atexit.register(_log_process)
