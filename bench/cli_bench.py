"""How long the `castnet` CLI takes to start: `--help`, `log show` and `audit` on a small log.

    .venv/bin/python bench/cli_bench.py [--runs 7] [--events 200] [--json]

Each command runs in a fresh interpreter (`python -m node.cli ...`), alternated with a baseline
(`python -c pass`, the interpreter's own start-up), so load on the machine hits both alike. Reported
per command: the median wall time and the median CPU time (user + system of the child process,
from `resource.getrusage`), and the median wall time over the baseline's."""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0  # seconds one start may take before the bench gives up


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of argv; fails on a non-zero exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, cwd=ROOT, check=True, timeout=TIMEOUT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (>= 5)")
    parser.add_argument("--events", type=int, default=200, help="events in the small log")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5 (the median of fewer says little)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    castnet = [sys.executable, "-m", "node.cli"]
    with tempfile.TemporaryDirectory(prefix="cli-bench-") as temp:
        log = str(Path(temp) / "small.castlog")
        subprocess.run([*castnet, "log", "synth", "-o", log, "--events", str(args.events)],
                       env=env, cwd=ROOT, check=True, timeout=TIMEOUT,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        commands = {
            "castnet --help": [*castnet, "--help"],
            "castnet log show LOG": [*castnet, "log", "show", log],
            "castnet audit LOG": [*castnet, "audit", log],
        }
        baseline = [sys.executable, "-c", "pass"]
        results = {}
        for name, argv in commands.items():
            walls, cpus, bases = [], [], []
            for _ in range(args.runs):
                bases.append(timed(baseline, env)[0])
                wall, cpu = timed(argv, env)
                walls.append(wall)
                cpus.append(cpu)
            results[name] = {
                "wall_s": statistics.median(walls),
                "cpu_s": statistics.median(cpus),
                "baseline_wall_s": statistics.median(bases),
                "over_baseline_s": statistics.median(
                    w - b for w, b in zip(walls, bases, strict=True)
                ),
                "runs": args.runs,
            }
    if args.json:
        print(json.dumps({"events": args.events, "commands": results}, indent=2))
        return 0
    print(f"medians of {args.runs} runs, alternated with `python -c pass`; log of {args.events}"
          " events")  # fmt: skip
    print(f"{'command':<24}{'wall s':>9}{'cpu s':>9}{'pass s':>9}{'over s':>9}")
    for name, r in results.items():
        print(f"{name:<24}{r['wall_s']:>9.3f}{r['cpu_s']:>9.3f}{r['baseline_wall_s']:>9.3f}"
              f"{r['over_baseline_s']:>9.3f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
