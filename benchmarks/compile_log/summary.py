"""Summarize a compile log written by ``benchmarks/compile_log/sitecustomize.py``: compilations
(all, >= 1 s: those JAX's persistent cache keeps), tracing and lowering seconds, the heaviest
programs (same name, device count and signature together) with their tests, then the Python
processes: how many, their CPU seconds, and the tests that spent the most CPU in them.

    python benchmarks/compile_log/summary.py compiles.tsv [--top 25]
"""

import argparse
import collections


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("log")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    phases: dict[str, list[float]] = collections.defaultdict(list)
    programs: dict[tuple, list] = collections.defaultdict(lambda: [0.0, 0, set()])
    processes: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for line in open(args.log):
        _pid, kind, seconds, name, sig, devices, test = line.rstrip("\n").split("\t")
        phases[kind].append(float(seconds))
        if kind == "process":
            processes[test][0] += float(seconds)
            processes[test][1] += 1
        if kind == "compile" and float(seconds) >= 1.0:
            entry = programs[(name, devices, sig)]
            entry[0] += float(seconds)
            entry[1] += 1
            entry[2].add(test.split("::")[-1] if test != "-" else "-")
    compiles = phases["compile"]
    big = [s for s in compiles if s >= 1.0]
    print(f"compilations {len(compiles)}: {sum(compiles):.0f} s; >= 1 s: {len(big)}, {sum(big):.0f} s")
    for kind in ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration"):
        print(f"{kind}: {len(phases[kind])} events, {sum(phases[kind]):.0f} s")
    for (name, devices, sig), (seconds, n, tests) in sorted(programs.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{seconds:6.0f} s x{n} {name} on {devices} device(s) {sig[:100]}\n         {sorted(tests)[:4]}")
    cpu = phases["process"]
    print(f"Python processes {len(cpu)}: {sum(cpu):.0f} CPU-s (pytest and its workers included, in a row of their own)")
    for test, (seconds, n) in sorted(processes.items(), key=lambda kv: -kv[1][0])[:args.top]:
        print(f"{seconds:6.0f} CPU-s in {n:3d} process(es)  {test}")


if __name__ == "__main__":
    main()
