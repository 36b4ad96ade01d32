#!/usr/bin/env python3
"""Summary of scripts/leave-one-source-out.sh: one row per held-out source, then the mean.

    scripts/loso_summary.py OUT/TAG-SOURCE.json ...   (`eval --json-out` files, each with its
                                                       `--predictions-out` beside it as .jsonl)
    scripts/loso_summary.py --versus OUT/OTHER OUT/TAG-SOURCE.json ...   (+ TAG − OTHER, paired,
                                                       from OUT/OTHER-SOURCE.jsonl)

Each row: the router on the source it never saw, the model its artifact falls back to (the best
single model on its training records) and router − that model with the evaluation's paired
bootstrap 95% interval. The mean row gives every held-out source equal weight; its interval
resamples each source's records (2,000 resamples), as `lookahead eval` does.
"""
import json
import random
import sys


def read(path):
    """(source, router average, fallback name, fallback score, gain, lower, upper, diffs,
    routed): diffs are router − fallback per record, routed maps record id -> routed score."""
    with open(path) as f:
        doc = json.load(f)
    versus = [c for c in doc.get("comparisons", []) if c["kind"] == "versus"]
    if not versus or not versus[0]["name"].startswith("fixed:"):
        sys.exit(f"{path}: no `--versus fixed:MODEL` comparison")
    c = versus[0]
    model = c["name"][len("fixed:"):]
    diffs, routed = [], {}
    with open(path[: -len(".json")] + ".jsonl") as f:
        for line in f:
            r = json.loads(line)
            routed[r["id"]] = r["scaled"][r["decision"]]
            diffs.append(routed[r["id"]] - r["scaled"][model])
    g = c["gain"]
    source = ",".join(doc["sources"])
    return (source, doc["average"], model, c["score"], g["gain"], g["lower"], g["upper"], diffs,
            routed)


def mean(xs):
    return sum(xs) / len(xs)


def bootstrap(groups, resamples=2000, seed=0):
    """95% interval of the equal-weight mean of per-group means, groups resampled within."""
    rng = random.Random(seed)
    means = sorted(
        mean([mean(rng.choices(g, k=len(g))) for g in groups]) for _ in range(resamples)
    )
    return means[int(0.025 * resamples)], means[int(0.975 * resamples) - 1]


def decided(path):
    """Record id -> the scaled score of the routed model, from a predictions file."""
    with open(path) as f:
        return {r["id"]: r["scaled"][r["decision"]] for r in map(json.loads, f)}


def versus(rows, other):
    """Per held-out source, this run's routed score minus OTHER's on the same records."""
    groups = []
    for row in rows:
        source, mine = row[0], row[8]
        theirs = decided(f"{other}-{source}.jsonl")
        if set(mine) != set(theirs):
            sys.exit(f"{other}-{source}.jsonl: not the same records as this run's {source}")
        groups.append([mine[i] - theirs[i] for i in sorted(mine)])
    lo, hi = bootstrap(groups)
    wins = sum(d > 0 for g in groups for d in g)
    losses = sum(d < 0 for g in groups for d in g)
    print(f"\nversus {other}: {mean([mean(g) for g in groups]):+.2f} [{lo:+.2f}, {hi:+.2f}] "
          f"({wins} wins, {losses} losses)")


def main(paths, other=None):
    rows = [read(p) for p in paths]
    print("| held-out source | n | router | fallback model (best single on the others) | "
          "router − fallback [95% CI] |")
    print("|---|---:|---:|---|---:|")
    for source, router, model, score, gain, lo, hi, diffs, _ in rows:
        print(f"| {source} | {len(diffs)} | {router:.2f} | {model} {score:.2f} | "
              f"{gain:+.2f} [{lo:+.2f}, {hi:+.2f}] |")
    groups = [r[7] for r in rows if r[7]]
    lo, hi = bootstrap(groups)
    print(f"| **mean of {len(rows)}** | {sum(len(g) for g in groups)} | "
          f"{mean([r[1] for r in rows]):.2f} | {mean([r[3] for r in rows]):.2f} | "
          f"**{mean([mean(g) for g in groups]):+.2f} [{lo:+.2f}, {hi:+.2f}]** |")
    if other:
        versus(rows, other)


if __name__ == "__main__":
    args = sys.argv[1:]
    other = None
    if args[:1] == ["--versus"] and len(args) > 2:
        other, args = args[1], args[2:]
    if not args:
        sys.exit(__doc__)
    main(args, other)
