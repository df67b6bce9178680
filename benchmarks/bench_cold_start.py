"""Cold start of the Functions app: ``import function_app`` in a fresh Python process.

Run: .venv/bin/python benchmarks/bench_cold_start.py [--runs N]
The Functions host imports ``function_app`` once per worker before any trigger runs, so every
trigger's first call waits for it. Each variant runs N times in fresh processes, round-robin (so
a load change on the machine hits all alike), and the median wall time is reported:

- ``python``: the interpreter alone;
- ``azure.functions``: the floor any app pays (the SDK the host needs);
- ``function_app``: ours, with DuckDB (inspect only) loaded by the trigger that needs it;
- ``function_app + eager DuckDB``: ours as it was, with the replayer (DuckDB, pyarrow.parquet)
  imported at module level: the baseline.

The last line is ``ratio_vs_baseline: <x>``: the baseline's import time over ours, interpreter
start-up subtracted from both.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "python": "pass",
    "azure.functions": "import azure.functions",
    "function_app": "import function_app",
    "function_app + eager DuckDB": "import function_app, shared.landing_zone.replayer",
}


def wall_time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for code in VARIANTS.values():
        wall_time(code)  # warm the file cache and write bytecode before timing
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.runs):
        for name, code in VARIANTS.items():
            samples[name].append(wall_time(code))
    median = {name: statistics.median(times) for name, times in samples.items()}
    for name, seconds in median.items():
        print(f"{name}: {seconds * 1000:,.0f} ms (median of {args.runs} fresh processes)")
    interpreter = median["python"]
    ours = median["function_app"] - interpreter
    floor = median["azure.functions"] - interpreter
    baseline = median["function_app + eager DuckDB"] - interpreter
    print(f"function_app over azure.functions alone: {ours / floor:.2f}x")
    print(f"ratio_vs_baseline: {baseline / ours:.2f}")


if __name__ == "__main__":
    main()
