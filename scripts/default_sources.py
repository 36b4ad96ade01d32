#!/usr/bin/env python3
"""The sources the CV scripts run on by default: the seven benchmark sources where DATA has
them, else every source of DATA's manifest (another team's data names its own), as `lookahead
demo` picks them. Prints them comma-separated.

    scripts/default_sources.py DATA
"""
import json
import sys

BENCHMARKS = ["AlpacaEval", "ArenaHard", "GSM8K", "HumanEval", "MATH", "MBPP", "MT-Bench"]

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    with open(f"{sys.argv[1]}/manifest.json") as f:
        names = list(json.load(f))
    print(",".join([s for s in BENCHMARKS if s in names] or names))
