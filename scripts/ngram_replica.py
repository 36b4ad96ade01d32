#!/usr/bin/env python3
"""Why did the Rust n-gram router's raw fit sit below scikit-learn's? (issue 15, session 17)

A measurement, not part of the product: the features of `lookahead_model::wide::features`
(tokens, FNV-1a buckets, the log2 length feature, sublinear TF, smooth IDF, unit norm) rebuilt
in numpy, and fitted two ways: a numpy copy of `wide::linear`'s full-batch Adam (300 steps, lr 0.1
cosine-decayed, L2 at C = 1) and scikit-learn's L-BFGS (the exact optimum of the same objective).
Variants switch one difference from scikit-learn's student (`response_teacher.vectorizer`) at a
time. 5-fold CV by record id (this prototype's own fold hash, `--salt` for another assignment),
equal weight per source, uncalibrated argmax, against the honest bar (best model per source on
the training folds), paired bootstrap within sources.

    scripts/ngram_replica.py VARIANT[,VARIANT...] [--salt S] [DATA]
    scripts/ngram_replica.py --shares [DATA]        # where a held-out row's norm sits (fold 0)

VARIANT: `sklearn` (the student: its tokens, min_df 2, L-BFGS), or `adam` / `lbfgs` (the
product's features, then fitted as named) with any of `+words` (two-or-more-character word tokens,
no punctuation: `--ngram-tokens words`), `+nolen` (no length feature) and `+mindf2` (buckets in
fewer than 2 training prompts dropped: `--ngram-min-df 2`). E.g. `adam,adam+words+mindf2`.
"""
import math
import re
import sys
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.sparse import csr_matrix

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from prompt_features import paired, per_member  # noqa: E402
from response_teacher import FOLDS, SOURCES, equal_weight, fold_of, load, paper_labels, scaled, vectorizer  # noqa: E402

BUCKETS = 1 << 18
WORD = re.compile(r"(?u)\b\w\w+\b")


def fnv_bucket(parts):
    """`NgramHasher::bucket`: FNV-1a over the parts' bytes, modulo the buckets."""
    h = 0xCBF29CE484222325
    for p in parts:
        for b in p.encode():
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h % BUCKETS


def tokens(text, words):
    """`features::words` (words) or `features::tokens` (words and punctuation)."""
    if words:
        return WORD.findall(text.lower())
    out, word = [], []
    for c in text:
        if c.isalnum() or c == "_":
            word.append(c.lower())
            continue
        if word:
            out.append("".join(word))
            word = []
        if not c.isspace():
            out.append(c)
    if word:
        out.append("".join(word))
    return out


def ngrams(text, words):
    t = tokens(text, words)
    return [((a,), fnv_bucket([a])) for a in t] + [
        ((a, b), fnv_bucket([a, "\0", b])) for a, b in zip(t, t[1:])
    ], len(t)


def count_matrix(prompts, words, length):
    """Sublinear term frequencies per bucket: `NgramHasher::counts`."""
    ind, dat, ptr = [], [], [0]
    for p in prompts:
        grams, n = ngrams(p, words)
        buckets = [b for _, b in grams]
        if length:
            buckets.append(fnv_bucket(["\x01len", str(int(math.floor(math.log2(max(n, 1)))))]))
        values, counts = np.unique(buckets, return_counts=True)
        ind += values.tolist()
        dat += (1 + np.log(counts)).tolist()
        ptr.append(len(ind))
    return csr_matrix((np.array(dat), np.array(ind), np.array(ptr)), shape=(len(prompts), BUCKETS))


def weigh(train, test, min_df):
    """`inverse_document_frequency` (0 below a `min_df` above 1) and `weigh`: unit-norm TF-IDF."""
    df = np.asarray((train > 0).sum(0)).ravel()
    idf = (np.log((1 + train.shape[0]) / (1 + df)) + 1) * ((df >= min_df) if min_df > 1 else 1)

    def rows(c):
        x = c.multiply(idf[None, :]).tocsr()
        norm = np.sqrt(np.asarray(x.multiply(x).sum(1)).ravel())
        return csr_matrix(x.multiply(1 / np.maximum(norm, 1e-12)[:, None]))

    return rows(train), rows(test)


def adam(x, y, c=1.0, steps=300, lr=0.1):
    """`wide::linear`'s fit: full-batch Adam from the prior logits, cosine-decayed step."""
    n, m = y.shape
    rate = np.clip(y.mean(0), 0.01, 0.99)
    b, w = np.log(rate / (1 - rate)), np.zeros((x.shape[1], m))
    mw, vw, mb, vb = np.zeros_like(w), np.zeros_like(w), np.zeros(m), np.zeros(m)
    xt = x.T.tocsr()
    for t in range(steps):
        r = (1 / (1 + np.exp(-(x @ w + b))) - y) / n
        gw, gb = xt @ r + w / (c * n), r.sum(0)
        step = lr * 0.5 * (1 + math.cos(math.pi * t / steps))
        c1, c2 = 1 - 0.9 ** (t + 1), 1 - 0.999 ** (t + 1)
        mw, vw = 0.9 * mw + 0.1 * gw, 0.999 * vw + 0.001 * gw * gw
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb * gb
        w -= step * (mw / c1) / (np.sqrt(vw / c2) + 1e-8)
        b -= step * (mb / c1) / (np.sqrt(vb / c2) + 1e-8)
    return w, b


def one_fold(job):
    variant, prompts, labels, counts, fold, f = job
    train, test = np.where(fold != f)[0], np.where(fold == f)[0]
    if variant == "sklearn":
        v = vectorizer()
        a = v.fit_transform([prompts[i] for i in train])
        return test, per_member(a, labels[train], v.transform([prompts[i] for i in test]))
    a, b = weigh(counts[train], counts[test], 2 if "+mindf2" in variant else 1)
    if variant.startswith("adam"):
        w, bias = adam(a, labels[train])
        return test, b @ w + bias
    return test, per_member(a, labels[train], b)


def features_of(variant):
    return "+words" in variant, "+nolen" not in variant


def shares(prompts, sources, fold):
    """Per source, over fold 0's held-out prompts with the product's old features: n-grams per
    prompt, the share of them (and of the row's squared norm) with a punctuation or
    one-character token, and the share of the norm in n-grams fewer than 2 training prompts have."""
    train = np.where(fold != 0)[0]
    df = {}
    for i in train:
        for b in {b for _, b in ngrams(prompts[i], False)[0]}:
            df[b] = df.get(b, 0) + 1
    print("| source | n-grams per prompt | punctuation or 1-char: of n-grams, of norm² | in < 2 training prompts: of norm² |")
    print("|---|---:|---:|---:|")
    for s in SOURCES:
        rows = []
        for i in np.where((fold == 0) & (sources == s))[0]:
            grams = {}
            for g, b in ngrams(prompts[i], False)[0]:
                count, short = grams.get(b, (0, False))
                grams[b] = (count + 1, short or any(len(t) < 2 for t in g))
            w = {b: (1 + math.log(k)) * (math.log((1 + len(train)) / (1 + df.get(b, 0))) + 1)
                 for b, (k, _) in grams.items()}
            total = sum(v * v for v in w.values())
            rows.append((len(w), np.mean([grams[b][1] for b in w]),
                         sum(w[b] ** 2 for b in w if grams[b][1]) / total,
                         sum(w[b] ** 2 for b in w if df.get(b, 0) < 2) / total))
        n, short, short_norm, rare = np.mean(rows, 0)
        print(f"| {s} | {n:.0f} | {short:.2f}, {short_norm:.2f} | {rare:.2f} |")


def main():
    args = sys.argv[1:]
    salt = ""
    if "--salt" in args:
        i = args.index("--salt")
        salt = args[i + 1]
        del args[i:i + 2]
    want_shares = "--shares" in args
    args = [a for a in args if a != "--shares"]
    variants = [] if want_shares else args.pop(0).split(",")
    manifest, records, models = load(args[0] if args else "../shared/data/routing")
    prompts = [r["prompt"] for r in records]
    sources = np.array([r["source"] for r in records])
    fold = np.array([fold_of(r["id"], salt) for r in records])
    if want_shares:
        return shares(prompts, sources, fold)
    quality = np.array([scaled(r, manifest, models) for r in records])
    labels = np.array([paper_labels(q) for q in quality])
    bar = np.zeros(len(records))
    for f in range(FOLDS):
        for s in SOURCES:
            train, test = (fold != f) & (sources == s), (fold == f) & (sources == s)
            bar[test] = quality[test][:, quality[train].mean(0).argmax()]
    counts = {}
    for variant in variants:
        key = features_of(variant)
        if variant != "sklearn" and key not in counts:
            counts[key] = count_matrix(prompts, *key)
        routed = np.zeros(len(records), int)
        jobs = [(variant, prompts, labels, counts.get(key), fold, f) for f in range(FOLDS)]
        with ProcessPoolExecutor(2) as pool:
            for test, scores in pool.map(one_fold, jobs):
                routed[test] = scores.argmax(1)
        q = quality[np.arange(len(records)), routed]
        np.save(f"/tmp/ngram-replica-{variant}{salt}.npy", q)
        per = " ".join(f"{s} {(q - bar)[sources == s].mean():+.2f}" for s in SOURCES)
        print(f"{variant} (salt {salt or 'none'}): {equal_weight(q, sources):.2f}, bar "
              f"{equal_weight(bar, sources):.2f}: {paired(q - bar, sources)} | {per}", flush=True)


if __name__ == "__main__":
    main()
