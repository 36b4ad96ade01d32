#!/usr/bin/env python3
"""Summary of scripts/cv.sh's evaluations: one row per method, seed and fold assignment (salt),
then the mean over them.

    scripts/cv_summary.py OUT/TAG[-saltSALT]-METHOD-sSEED-cv.json ...   (`eval --json-out` files)

Columns: the router's equal-weight score, the honest bar (best model per benchmark chosen on each
artifact's training folds) and the best single model chosen the same way, and router − each with
its paired bootstrap 95% interval; with `--versus`, router − the other router too. The mean row
averages the runs' points (seeds × fold assignments); its brackets give the range of the gain over
the runs (not an interval).
"""
import json
import re
import sys
from collections import OrderedDict

NAME = re.compile(r"(?:-salt(?P<salt>[^-/]+))?-(?P<method>[^-/]+)-s(?P<seed>\d+)-cv\.json$")


def gains(doc):
    """kind -> (name, baseline score, gain, lower, upper)."""
    out = {}
    for c in doc.get("comparisons", []):
        g = c["gain"]
        out.setdefault(c["kind"], (c["name"], c["score"], g["gain"], g["lower"], g["upper"]))
    return out


def cell(entry):
    if entry is None:
        return "", ""
    _, score, gain, lo, hi = entry
    return f"{score:.2f}", f"{gain:+.2f} [{lo:+.2f}, {hi:+.2f}]"


def mean_cell(entries):
    entries = [e for e in entries if e is not None]
    if not entries:
        return "", ""
    score = sum(e[1] for e in entries) / len(entries)
    g = [e[2] for e in entries]
    return f"{score:.2f}", f"{sum(g) / len(g):+.2f} (runs {min(g):+.2f} … {max(g):+.2f})"


def main(paths):
    runs = OrderedDict()
    versus_name = ""
    for path in paths:
        m = NAME.search(path)
        if not m:
            sys.exit(f"{path}: expected a name like TAG[-saltSALT]-METHOD-sSEED-cv.json")
        with open(path) as f:
            doc = json.load(f)
        g = gains(doc)
        if "versus" in g:
            v = re.search(r"-(?P<method>[^-/]+)-s\d+-cv\.jsonl$", g["versus"][0])
            versus_name = v["method"] if v else g["versus"][0]
        run = m["seed"] + (f", salt {m['salt']}" if m["salt"] else "")
        runs.setdefault(m["method"], []).append((run, doc["average"], g))
    print("| method | run (seed, salt) | router | honest bar | router − bar [95% CI] | best single "
          "| router − best single [95% CI] | router − versus [95% CI] |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for method, seeds in runs.items():
        for seed, average, g in seeds:
            bar, bar_gain = cell(g.get("honest_bar"))
            single, single_gain = cell(g.get("best_single"))
            _, vs_gain = cell(g.get("versus"))
            print(f"| {method} | {seed} | {average:.2f} | {bar} | {bar_gain} | {single} "
                  f"| {single_gain} | {vs_gain} |")
        if len(seeds) > 1:
            average = sum(s[1] for s in seeds) / len(seeds)
            cols = [mean_cell([s[2].get(k) for s in seeds])
                    for k in ("honest_bar", "best_single", "versus")]
            print(f"| **{method}** | mean of {len(seeds)} | **{average:.2f}** | {cols[0][0]} "
                  f"| {cols[0][1]} | {cols[1][0]} | {cols[1][1]} | {cols[2][1]} |")
    if versus_name:
        print(f"\nversus: {versus_name} (its predictions of the same seed, `eval --versus`)")
    print("\nIntervals: paired bootstrap, records resampled within sources, equal weight over "
          "sources. Mean rows: mean of the runs' points, and the range of the gain over the runs "
          "(seeds × fold assignments).")


if __name__ == "__main__":
    main(sys.argv[1:])
