#!/usr/bin/env python3
"""Other ways to read the prompt, for a prompt-only router (issue 15, item 2).

A prototype measurement, not part of the product, on the same protocol and student as
`response_teacher.py` (TF-IDF word uni+bigram logistic routers over the whole prompt, one per
pool member on the paper's 0/1 labels, 5-fold CV by record id over the seven benchmark sources,
equal weight per source). Each VARIANT changes one thing, with its reason:

- `words`: the student itself (the reference row);
- `length`: + one-hot buckets of log2 word count, line count and digit count. TF-IDF rows are
  L2-normalised, so the n-gram router cannot see how long a prompt is, and a longer problem may
  be a harder one, where the larger model wins;
- `chars`: + TF-IDF character 2–5-grams within word boundaries: identifiers, numbers and
  operators in code and maths split into pieces a word tokeniser keeps whole;
- `relative`: one multinomial model of *which member is best* (each label-1 member a target,
  weighted 1/#label-1), instead of one independent P(label) per member: the decision only needs
  the differences between members, and independent fits spend their capacity on how hard a
  prompt is for all of them;
- `relative-informative`: the same, fitted only on prompts whose members do not all tie (half of
  the graded sources' prompts tie and say nothing about which member to pick);
- `relative-plus-words`: the sum of `relative-informative`'s and `words`' log-probabilities.

    pip install scikit-learn
    scripts/prompt_features.py VARIANT [DATA] [--versus words]   # ~2-5 min on one core

Writes the per-record scaled quality of the routed member to /tmp/prompt-features-VARIANT.npy;
with `--versus V` it also prints the paired bootstrap (within sources) against V's file.
"""
import os
import sys

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from response_teacher import FOLDS, SOURCES, equal_weight, fold_of, load, paper_labels, scaled, vectorizer  # noqa: E402

VARIANTS = ["words", "length", "chars", "relative", "relative-informative", "relative-plus-words"]


def length_features(prompts):
    """One-hot log2 buckets of words (12), lines (6) and digits (6), scaled to 0.5 per group."""
    rows = np.zeros((len(prompts), 24))
    for i, p in enumerate(prompts):
        rows[i, min(int(np.log2(1 + len(p.split()))), 11)] = 0.5
        rows[i, 12 + min(int(np.log2(p.count("\n") + 1)), 5)] = 0.5
        rows[i, 18 + min(int(np.log2(1 + sum(c.isdigit() for c in p))), 5)] = 0.5
    return csr_matrix(rows)


def features(variant, train, test):
    v = vectorizer()
    a, b = v.fit_transform(train), v.transform(test)
    if variant == "length":
        a, b = hstack([a, length_features(train)]), hstack([b, length_features(test)])
    if variant == "chars":
        c = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                            max_features=200_000)
        a, b = hstack([a, c.fit_transform(train)]), hstack([b, c.transform(test)])
    return a.tocsr(), b.tocsr()


def per_member(a, labels, b, c=1.0):
    """One logistic regression per member at strength `c`; a member whose training labels are
    all alike gets that label."""
    out = np.zeros((b.shape[0], labels.shape[1]))
    for j in range(labels.shape[1]):
        if labels[:, j].min() == labels[:, j].max():
            out[:, j] = labels[0, j]
        else:
            out[:, j] = LogisticRegression(C=c, max_iter=3000).fit(a, labels[:, j]).predict_proba(b)[:, 1]
    return out


def which_is_best(a, labels, b, informative_only):
    """P(member is the best): every label-1 member a target, weighted 1 / #label-1."""
    m = labels.shape[1]
    keep = labels.sum(1) < m if informative_only else np.ones(len(labels), bool)
    rows, ys, ws = [], [], []
    for k in range(m):
        sel = np.where((labels[:, k] > 0) & keep)[0]
        rows.append(sel), ys.append(np.full(len(sel), k)), ws.append(1.0 / labels[sel].sum(1))
    rows, ys, ws = np.concatenate(rows), np.concatenate(ys), np.concatenate(ws)
    return LogisticRegression(C=1.0, max_iter=3000).fit(a[rows], ys, sample_weight=ws).predict_proba(b)


def route(variant, a, labels, b):
    if variant.startswith("relative"):
        p = which_is_best(a, labels, b, informative_only=variant != "relative")
        if variant == "relative-plus-words":
            return np.log(p + 1e-9) + np.log(per_member(a, labels, b) + 1e-9)
        return p
    return per_member(a, labels, b)


def paired(d, sources):
    groups = [np.where(sources == s)[0] for s in SOURCES]
    rng = np.random.default_rng(0)
    boot = [np.mean([d[rng.choice(g, len(g))].mean() for g in groups]) for _ in range(2000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    mean = np.mean([d[g].mean() for g in groups])
    return f"{mean:+.2f} [{lo:+.2f}, {hi:+.2f}] ({(d > 0).sum()} wins, {(d < 0).sum()} losses)"


def main():
    args = sys.argv[1:]
    versus = None
    if "--versus" in args:
        i = args.index("--versus")
        versus = args[i + 1]
        del args[i:i + 2]
    variant = args[0]
    if variant not in VARIANTS:
        sys.exit(f"VARIANT must be one of {VARIANTS}")
    data = args[1] if len(args) > 1 else "../shared/data/routing"
    manifest, records, models = load(data)
    prompts = [r["prompt"] for r in records]
    sources = np.array([r["source"] for r in records])
    quality = np.array([scaled(r, manifest, models) for r in records])
    labels = np.array([paper_labels(q) for q in quality])
    fold = np.array([fold_of(r["id"]) for r in records])
    routed = np.zeros(len(records), int)
    for f in range(FOLDS):
        train, test = np.where(fold != f)[0], np.where(fold == f)[0]
        a, b = features(variant, [prompts[i] for i in train], [prompts[i] for i in test])
        routed[test] = route(variant, a, labels[train], b).argmax(1)
    q = quality[np.arange(len(records)), routed]
    np.save(f"/tmp/prompt-features-{variant}.npy", q)
    per = " ".join(f"{s} {q[sources == s].mean():.2f}" for s in SOURCES)
    print(f"{variant}: {equal_weight(q, sources):.2f} ({per})")
    if versus:
        other = np.load(f"/tmp/prompt-features-{versus}.npy")
        print(f"{variant} - {versus}: {paired(q - other, sources)}")


if __name__ == "__main__":
    main()
