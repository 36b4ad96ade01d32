#!/usr/bin/env python3
"""Do the members' responses help a prompt-only router as a *teacher*? (issue 15, item 3)

A prototype measurement, not part of the product: scikit-learn routers over TF-IDF word uni- and
bigrams of the whole prompt (the shape of `lookahead train --method ngram`, without its
within-source calibration or gate), 5-fold CV by record id over the seven benchmark sources,
equal weight per source, paired bootstrap within sources.

    pip install scikit-learn
    scripts/response_teacher.py ALPHA TEACHER [DATA]    # e.g. 0.5 responses, 0.5 prompt

The student learns soft targets `ALPHA * teacher + (1 - ALPHA) * label` (BCE with soft targets:
each row twice, weighted by the target and its complement). The teacher, per pool member, is a
logistic regression cross-fitted on the training folds (5 inner folds, so no training record's
target comes from a fit that saw its label) over

- `responses`: the prompt and *that member's real response* (privileged information, only known
  at training time: the Lookahead idea used as a teacher, and a lower-variance target if the
  response says whether the member got it right);
- `all`: the prompt and *every* member's response, each through its own vectorizer (the label is
  relative to the prompt's best, which one response alone cannot show);
- `prompt`: the prompt alone (the control: plain self-distillation, i.e. label smoothing towards
  a cross-fitted prompt-only model).

The difference between the two rows is what the responses themselves add.
"""
import gzip
import hashlib
import json
import sys

import numpy as np
from scipy.sparse import hstack, vstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

SOURCES = ["AlpacaEval", "ArenaHard", "GSM8K", "HumanEval", "MATH", "MBPP", "MT-Bench"]
FOLDS = 5


def load(data):
    manifest = json.load(open(f"{data}/manifest.json"))
    records = []
    for s in SOURCES:
        with gzip.open(f"{data}/{s}.jsonl.gz", "rt") as f:
            records += [json.loads(line) for line in f]
    models = sorted(set.intersection(*[set(manifest[s]["models"]) for s in SOURCES]))
    return manifest, records, models


def scaled(record, manifest, models):
    lo, hi = manifest[record["source"]]["score_range"]
    return [100 * (record["responses"][m]["score"] - lo) / (hi - lo) for m in models]


def paper_labels(q):
    """1 where the min-max normalised score is within 0.8 of the prompt's best."""
    lo, hi = q.min(), q.max()
    if hi - lo < 1e-9:
        return np.ones_like(q)
    return ((q - lo) / (hi - lo) >= 0.8).astype(float)


def fold_of(rid, salt=""):
    """The record's outer fold: its id (after `salt`, one fold assignment per salt) hashed."""
    return int(hashlib.sha256((salt + rid).encode()).hexdigest(), 16) % FOLDS


def vectorizer():
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)


def fit_soft(x, target, c=1.0):
    n = x.shape[0]
    weight = np.r_[target, 1 - target]
    keep = weight > 1e-6
    y = np.r_[np.ones(n), np.zeros(n)]
    return LogisticRegression(C=c, max_iter=2000).fit(
        vstack([x, x])[keep], y[keep], sample_weight=weight[keep]
    )


def student(x_train, targets, x_test):
    return np.column_stack(
        [fit_soft(x_train, targets[:, j]).predict_proba(x_test)[:, 1] for j in range(targets.shape[1])]
    )


def teacher_all_out_of_fold(columns, labels):
    """Per member, P(label | prompt, every response): one vectorizer per text column."""
    n, m = labels.shape
    inner = np.arange(n) % FOLDS
    out = np.zeros((n, m))
    for k in range(FOLDS):
        fit_on, held = inner != k, inner == k
        xa, xb = [], []
        for texts in columns:
            v = vectorizer()
            xa.append(v.fit_transform([t for t, b in zip(texts, fit_on) if b]))
            xb.append(v.transform([t for t, b in zip(texts, held) if b]))
        xa, xb = hstack(xa).tocsr(), hstack(xb).tocsr()
        for j in range(m):
            model = LogisticRegression(C=1.0, max_iter=2000).fit(xa, labels[fit_on, j])
            out[held, j] = model.predict_proba(xb)[:, 1]
    return out


def teacher_out_of_fold(texts_of, labels):
    """Per member, P(label | texts) from inner folds that did not see the record."""
    n, m = labels.shape
    inner = np.arange(n) % FOLDS
    out = np.zeros((n, m))
    for j in range(m):
        texts = texts_of(j)
        for k in range(FOLDS):
            fit_on, held = inner != k, inner == k
            v = vectorizer()
            xa = v.fit_transform([t for t, b in zip(texts, fit_on) if b])
            xb = v.transform([t for t, b in zip(texts, held) if b])
            model = LogisticRegression(C=1.0, max_iter=2000).fit(xa, labels[fit_on, j])
            out[held, j] = model.predict_proba(xb)[:, 1]
    return out


def equal_weight(q, sources):
    return np.mean([q[sources == s].mean() for s in SOURCES])


def main():
    alpha = float(sys.argv[1])
    teacher = sys.argv[2]
    data = sys.argv[3] if len(sys.argv) > 3 else "../shared/data/routing"
    manifest, records, models = load(data)
    prompts = [r["prompt"] for r in records]
    sources = np.array([r["source"] for r in records])
    quality = np.array([scaled(r, manifest, models) for r in records])
    labels = np.array([paper_labels(q) for q in quality])
    responses = {m: [r["responses"][m]["text"] for r in records] for m in models}
    fold = np.array([fold_of(r["id"]) for r in records])
    base = np.zeros(len(records), int)
    taught = np.zeros(len(records), int)
    for f in range(FOLDS):
        train, test = np.where(fold != f)[0], np.where(fold == f)[0]
        v = vectorizer()
        x_train = v.fit_transform([prompts[i] for i in train])
        x_test = v.transform([prompts[i] for i in test])
        base[test] = student(x_train, labels[train], x_test).argmax(1)

        def texts_of(j):
            if teacher == "responses":
                return [prompts[i] + "\n### RESPONSE ###\n" + responses[models[j]][i] for i in train]
            return [prompts[i] for i in train]

        if teacher == "all":
            columns = [[prompts[i] for i in train]] + [[responses[m][i] for i in train] for m in models]
            soft = teacher_all_out_of_fold(columns, labels[train])
        else:
            soft = teacher_out_of_fold(texts_of, labels[train])
        accuracy = ((soft > 0.5) == labels[train]).mean()
        targets = alpha * soft + (1 - alpha) * labels[train]
        taught[test] = student(x_train, targets, x_test).argmax(1)
        print(f"fold {f}: teacher out-of-fold label accuracy {accuracy:.3f}", flush=True)
    rows = np.arange(len(records))
    q_base, q_taught = quality[rows, base], quality[rows, taught]
    print(f"models {models}")
    for name, q in [("labels only", q_base), (f"{alpha} x {teacher} teacher", q_taught)]:
        per = " ".join(f"{s} {q[sources == s].mean():.2f}" for s in SOURCES)
        print(f"{name}: {equal_weight(q, sources):.2f} ({per})")
    d = q_taught - q_base
    groups = [np.where(sources == s)[0] for s in SOURCES]
    rng = np.random.default_rng(0)
    boot = [np.mean([d[rng.choice(g, len(g))].mean() for g in groups]) for _ in range(2000)]
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(
        f"taught - labels only: {np.mean([d[g].mean() for g in groups]):+.2f} [{lo:+.2f}, {hi:+.2f}]"
        f" ({(d > 0).sum()} wins, {(d < 0).sum()} losses)"
    )


if __name__ == "__main__":
    main()
