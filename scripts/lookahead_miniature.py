#!/usr/bin/env python3
"""Lookahead in miniature: does foreseeing the members' responses help a router that shares one
hidden layer between routing and foresight? (issue 15, item 3)

A prototype measurement, not part of the product. A bag-of-words MLP (TF-IDF word uni+bigrams
of the whole prompt, 30k features -> 256 ReLU -> one logit per pool member, BCE on the paper's
labels, Adam, 6 epochs) whose hidden layer also predicts, per member, a 64-dimensional latent of
that member's *whole* response (truncated SVD of the responses' TF-IDF, standardised per member;
MSE weighted by LAMBDA): the mechanism by which lite's response objective could help, without
the encoder. 5-fold CV by record id over the seven benchmark sources, equal weight per source.

    pip install scikit-learn
    scripts/lookahead_miniature.py ARM SEED [LAMBDA] [DATA]    # ~3 min on one core

ARM: `l0` (no response objective), `real` (the paper's five members' real responses), `shuffled`
(another record's responses of the same benchmark: the control), `real+extra` (also
gemma-2-9b-it's responses as a train-time-only target: the pool's extra member, missing on
ArenaHard and masked there). Writes the routed member's scaled quality per record to
/tmp/lookahead-miniature-ARM-LAMBDA-sSEED.npy.
"""
import os
import sys

import numpy as np
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import response_teacher as rt  # noqa: E402

arm = sys.argv[1]          # l0 | real | real+extra | shuffled
seed = int(sys.argv[2]); lam = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
data = sys.argv[4] if len(sys.argv) > 4 else "../shared/data/routing"
manifest, records, models = rt.load(data)
EXTRA = "gemma-2-9b-it"
prompts = [r["prompt"] for r in records]
sources = np.array([r["source"] for r in records])
Q = np.array([rt.scaled(r, manifest, models) for r in records])
L = np.array([rt.paper_labels(q) for q in Q])
fold = np.array([rt.fold_of(r["id"]) for r in records])
members = models + ([EXTRA] if arm == "real+extra" else [])
resp = [[(r["responses"].get(m) or {}).get("text") for r in records] for m in members]
H, D, EPOCHS, LR, BATCH = 256, 64, 6, 1e-3, 64

def adam(params):
    return {k: [np.zeros_like(v), np.zeros_like(v)] for k, v in params.items()}

def run_fold(tr, te, rng):
    vx = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=30000)
    Xtr = vx.fit_transform([prompts[i] for i in tr]).astype(np.float32).tocsr()
    Xte = vx.transform([prompts[i] for i in te]).astype(np.float32).tocsr()
    M = len(members)
    T = np.zeros((len(tr), M, D), np.float32); mask = np.zeros((len(tr), M), np.float32)
    if arm != "l0":
        vr = TfidfVectorizer(min_df=3, sublinear_tf=True, max_features=30000)
        texts = [t for m in range(M) for i in tr for t in [resp[m][i]] if t]
        vr.fit(texts)
        svd = TruncatedSVD(D, random_state=0).fit(vr.transform(texts[::3]))
        for m in range(M):
            idx = [k for k, i in enumerate(tr) if resp[m][i]]
            Z = svd.transform(vr.transform([resp[m][tr[k]] for k in idx]))
            T[idx, m] = Z; mask[idx, m] = 1
        if arm == "shuffled":   # another record's responses of the same source
            for s in np.unique(sources[tr]):
                g = np.where(sources[tr] == s)[0]
                perm = rng.permutation(g)
                T[g], mask[g] = T[perm], mask[perm]
        mu = (T * mask[..., None]).sum(0) / np.maximum(mask.sum(0), 1)[:, None]
        sd = np.sqrt((((T - mu) ** 2) * mask[..., None]).sum((0, 2)) / np.maximum(mask.sum(0) * D, 1))
        T = (T - mu) / np.maximum(sd, 1e-6)[None, :, None]
    V = Xtr.shape[1]; P = L.shape[1]
    p = {"W1": rng.normal(0, 0.02, (V, H)).astype(np.float32), "b1": np.zeros(H, np.float32),
         "W2": rng.normal(0, 0.02, (H, P)).astype(np.float32), "b2": np.zeros(P, np.float32),
         "A": rng.normal(0, 0.02, (M, H, D)).astype(np.float32), "c": np.zeros((M, D), np.float32)}
    st = adam(p); t = 0; Ltr = L[tr].astype(np.float32)
    for ep in range(EPOCHS):
        order = rng.permutation(len(tr))
        for b0 in range(0, len(tr), BATCH):
            bi = order[b0:b0 + BATCH]; x = Xtr[bi]; n = len(bi)
            a1 = x @ p["W1"] + p["b1"]; h = np.maximum(a1, 0)
            z = h @ p["W2"] + p["b2"]; y = Ltr[bi]
            sig = 1 / (1 + np.exp(-z)); dz = (sig - y) / (n * P)
            g = {"W2": h.T @ dz, "b2": dz.sum(0)}; dh = dz @ p["W2"].T
            if lam > 0 and arm != "l0":
                r = np.einsum("nh,mhd->nmd", h, p["A"]) + p["c"]
                mk = mask[bi][..., None]; diff = (r - T[bi]) * mk
                denom = max(mk.sum() * D, 1.0)
                dr = lam * 2 * diff / denom
                g["A"] = np.einsum("nh,nmd->mhd", h, dr); g["c"] = dr.sum(0)
                dh = dh + np.einsum("nmd,mhd->nh", dr, p["A"])
            else:
                g["A"] = np.zeros_like(p["A"]); g["c"] = np.zeros_like(p["c"])
            da = dh * (a1 > 0)
            g["W1"] = (x.T @ da).astype(np.float32); g["b1"] = da.sum(0)
            t += 1
            for k in p:
                m1, m2 = st[k]; gk = g[k] + (1e-4 * p[k] if k in ("W1", "W2", "A") else 0)
                m1 *= 0.9; m1 += 0.1 * gk; m2 *= 0.999; m2 += 0.001 * gk * gk
                p[k] -= LR * (m1 / (1 - 0.9 ** t)) / (np.sqrt(m2 / (1 - 0.999 ** t)) + 1e-8)
    h = np.maximum(Xte @ p["W1"] + p["b1"], 0)
    return (h @ p["W2"] + p["b2"]).argmax(1)

rng = np.random.default_rng(seed)
pred = np.zeros(len(records), int)
for f in range(5):
    tr, te = np.where(fold != f)[0], np.where(fold == f)[0]
    pred[te] = run_fold(tr, te, rng)
q = Q[np.arange(len(records)), pred]
np.save(f"/tmp/lookahead-miniature-{arm}-{lam}-s{seed}.npy", q)
per = " ".join(f"{s} {q[sources == s].mean():.2f}" for s in rt.SOURCES)
print(arm, lam, seed, f"{rt.equal_weight(q, sources):.2f}", per, flush=True)
