"""Benchmark: start-up of the `havana` CLI (help of every command) against a bare interpreter and an `import torch`.

Each command is run several times in a fresh process; the median wall time is printed, with the ratio to
`import torch` (what every command paid before the commands imported their engines lazily). Goal: `havana --help`
under 1 s on the 2-core development machine.

    .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "havana --help": [sys.executable, "-m", "havana", "--help"],
    "havana table --help": [sys.executable, "-m", "havana", "table", "--help"],
    "havana figure --help": [sys.executable, "-m", "havana", "figure", "--help"],
    "havana train-head --help": [sys.executable, "-m", "havana", "train-head", "--help"],
}


def measure(command: list[str], repeats: int) -> float:
    """Median wall seconds over `repeats` fresh runs."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for name, command in COMMANDS.items():
        results[name] = measure(command, args.repeats)
    torch_time = results["python -c 'import torch'"]
    print(f"{'command':<28} {'median s':>9} {'vs import torch':>16}")
    for name, seconds in results.items():
        print(f"{name:<28} {seconds:>9.3f} {seconds / torch_time:>15.2f}x")
    print(f"goal: havana --help < 1 s: {'met' if results['havana --help'] < 1.0 else 'NOT met'}")


if __name__ == "__main__":
    main()
