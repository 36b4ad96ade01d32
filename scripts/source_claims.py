#!/usr/bin/env python3
"""How a source classifier sees prompts of a source it never saw (issue 15, session 19).

A prototype measurement, not part of the product: a scikit-learn replica of the within-source
calibration's source classifier (one-vs-rest logistic regression on TF-IDF word uni+bigrams,
C = 1), fitted for each held-out source on the other sources' records outside fold 0. Prints,
for the held-out source's prompts and for fold 0's prompts of the other sources, the median of
the largest one-vs-rest probability and the share below 0.5 (`lookahead_model::calibration::CLAIM`),
and which training source takes the held-out prompts once the probabilities are normalised.

    pip install scikit-learn
    scripts/source_claims.py [DATA]      # ~2 min
"""
import os
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from response_teacher import SOURCES, fold_of, load, vectorizer  # noqa: E402


def main():
    data = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/routing"
    _, records, _ = load(data)
    prompts = [r["prompt"] for r in records]
    src = np.array([r["source"] for r in records])
    fold = np.array([fold_of(r["id"]) for r in records])
    print("| held-out source | largest probability, median | below 0.5 | "
          "training sources' held-out prompts: median, below 0.5 | normalised, taken by |")
    print("|---|---:|---:|---:|---|")
    for held in SOURCES:
        train = (src != held) & (fold != 0)
        others = [s for s in SOURCES if s != held]
        v = vectorizer()
        x = v.fit_transform([prompts[i] for i in np.where(train)[0]])
        fits = [LogisticRegression(C=1.0, max_iter=1000).fit(x, src[train] == s) for s in others]

        def claims(mask):
            z = v.transform([prompts[i] for i in np.where(mask)[0]])
            return np.stack([f.predict_proba(z)[:, 1] for f in fits], 1)

        unseen, seen = claims(src == held), claims((src != held) & (fold == 0))
        taken = np.bincount(unseen.argmax(1), minlength=len(others)) / len(unseen)
        top = ", ".join(f"{s} {t:.0%}" for s, t in zip(others, taken) if t >= 0.05)
        print(f"| {held} | {np.median(unseen.max(1)):.2f} | {np.mean(unseen.max(1) < 0.5):.0%} | "
              f"{np.median(seen.max(1)):.2f}, {np.mean(seen.max(1) < 0.5):.0%} | {top} |")


if __name__ == "__main__":
    main()
