#!/usr/bin/env python3
"""How far a within-source calibration of a router's scores could go (issue 15, item 2).

A prototype measurement, not part of the product. Reads a raw router's 5-fold CV predictions
(`scripts/cv.sh` with `EXTRA=--no-source-calibration`: the `-cv.jsonl` file, every record scored
by the fold artifact that did not see it) and calibrates them as `lookahead_model::calibration`
does (per source: each model's mean quality, one least-squares slope ≥ 0 of centred quality on
centred score; the record's true source), then reports router − the honest bar (the best model
per source on the other folds), equal weight over sources:

- `other folds`: each fold calibrated from the other folds' out-of-fold scores (≈ the product);
- `hindsight slope`: honest means, the slope fitted on the judged fold itself;
- `hindsight best`: no router, the judged fold's own best model per source (the bar's noise);
- `hindsight both`: means and slope fitted on the judged fold;
- with `--stack OTHER.jsonl` (another router's CV predictions, same folds): a second slope per
  source on OTHER's centred scores, fitted jointly (least squares, clamped at 0);
- with `--pool K`: each source's slope shrunk towards the sources' pooled slope with weight K.

    scripts/calibration_ceiling.py /tmp/lookahead-cv/wordsraw-ngram-s17-cv.jsonl
    scripts/calibration_ceiling.py RAW.jsonl --stack /tmp/lookahead-cv/nowide-mlc-s17-cv.jsonl
"""
import argparse
import json

import numpy as np


def read(path):
    rows = sorted((json.loads(line) for line in open(path)), key=lambda r: r["id"])
    models = sorted(rows[0]["predicted"])
    scores = np.array([[r["predicted"][m] for m in models] for r in rows])
    quality = np.array([[r["scaled"][m] for m in models] for r in rows]) / 100
    return ([r["id"] for r in rows], scores, quality,
            np.array([r["source"] for r in rows]), np.array([r["fold"] for r in rows]))


def centred(p):
    return p - p.mean(1, keepdims=True)


def moments(x, q):
    """Per-source targets and regressors: deviations from the source's per-model means."""
    qm, cm = q.mean(0), x.mean(0)
    y = (centred(q) - (qm - qm.mean())).ravel()
    return qm, cm, y, (x - cm).ravel()


def fit(scores, quality, pool=0.0):
    """Per source: mean quality, mean centred scores (one array per scorer) and slopes.
    `scores[s]` is the list of scorers' centred scores of source s, `quality[s]` its qualities."""
    cal = {}
    for s, xs in scores.items():
        parts = [moments(x, quality[s]) for x in xs]
        qm, y = parts[0][0], parts[0][2]
        cal[s] = (qm, [m[1] for m in parts], np.stack([m[3] for m in parts], 1), y)
    # The pooled slope (first scorer): every source's moments per record, equal weight.
    cross = sum(c[:, 0] @ y / len(y) for _, _, c, y in cal.values())
    square = sum(c[:, 0] @ c[:, 0] / len(y) for _, _, c, y in cal.values())
    out = {}
    for s, (qm, cms, cols, y) in cal.items():
        if pool > 0:
            n, k = len(y), len(cal)
            b = np.array([(cols[:, 0] @ y / n + pool * cross / k)
                          / (cols[:, 0] @ cols[:, 0] / n + pool * square / k)])
        else:
            b = np.linalg.lstsq(cols, y, rcond=None)[0]
        out[s] = (qm, cms, np.maximum(b, 0))
    return out


def apply(cal, xs):
    qm, cms, b = cal
    return qm + sum(bi * (x - cm) for bi, x, cm in zip(b, xs, cms))


def equal_weight(values, sources):
    return 100 * np.mean([values[sources == s].mean() for s in np.unique(sources)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw")
    ap.add_argument("--stack")
    ap.add_argument("--pool", type=float, default=0.0)
    a = ap.parse_args()
    ids, p, q, src, fold = read(a.raw)
    xs = [centred(p)]
    if a.stack:
        ids2, p2, _, _, fold2 = read(a.stack)
        if ids2 != ids or (fold2 != fold).any():
            raise SystemExit("--stack: not the same records and folds")
        xs.append(centred(p2))
    rows = {k: np.zeros(len(ids)) for k in
            ["bar", "other folds", "hindsight slope", "hindsight best", "hindsight both"]}
    for f in np.unique(fold):
        parts = {}
        for name, mask in [("train", fold != f), ("test", fold == f)]:
            parts[name] = ({s: ([x[mask & (src == s)] for x in xs]) for s in np.unique(src)},
                           {s: q[mask & (src == s)] for s in np.unique(src)})
        trained = fit(*parts["train"], a.pool)
        judged = fit(*parts["test"])
        for s in np.unique(src):
            j = (fold == f) & (src == s)
            qj, xj = q[j], [x[j] for x in xs]
            pick = lambda scores: qj[np.arange(len(qj)), scores.argmax(1)]  # noqa: E731
            qm, cms, b = trained[s]
            rows["bar"][j] = qj[:, qm.argmax()]
            rows["other folds"][j] = pick(apply(trained[s], xj))
            rows["hindsight slope"][j] = pick(apply((qm, cms, judged[s][2]), xj))
            rows["hindsight best"][j] = qj[:, qj.mean(0).argmax()]
            rows["hindsight both"][j] = pick(apply(judged[s], xj))
    for name, v in rows.items():
        print(f"{name:16s} {equal_weight(v, src):6.2f}  − bar {equal_weight(v - rows['bar'], src):+.2f}")


if __name__ == "__main__":
    main()
