#!/usr/bin/env python3
"""Frozen sentence embeddings beside the words, with the within-source calibration (issue 15, item 2).

A prototype measurement, not part of the product. The reason: the n-gram router reads words, and a
small source (MT-Bench's 60 prompts, ArenaHard's 353) gives few examples per word; a dense
embedding of the whole prompt from a pretrained sentence encoder (all-MiniLM-L6-v2, the backbone
package, frozen, mean-pooled and L2-normalised, as sentence-transformers serves it) puts prompts
that mean the same near each other however they are worded, so what the router learns on one
prompt carries over to its neighbours.

The student is `response_teacher.py`'s (one logistic router per pool member over TF-IDF word
uni+bigrams of the whole prompt, the paper's 0/1 labels), with two changes that make it the
product's shape: the regularisation strength is picked per outer fold on the inner folds' log-loss
(the product picks it on validation BCE), and each router is also served through the within-source
calibration of `lookahead_model::calibration` (per source, each member's mean quality plus a slope
>= 0 on per-prompt-centred scores, fitted on the inner folds' out-of-fold scores; applied with the
record's true source, which the product's source classifier recovers almost always). VARIANT:

- `words`: the student (the reference);
- `embed`: the sentence embedding alone (384 dense features);
- `words+embed`: both, side by side (each part has unit norm).

5-fold CV by record id (`--salt S` draws another fold assignment), equal weight per source; the
bar is each source's best member on the training folds. The encoder is run once (numpy, ~4 min on
two cores, head + tail window of 256 word pieces) and cached in /tmp.

    pip install scikit-learn
    scripts/sentence_embeddings.py VARIANT [DATA] [--salt S] [--versus VARIANT]   # ~7 min
    scripts/sentence_embeddings.py VARIANT [DATA] --leave-one-source-out [--versus VARIANT]
"""
import hashlib
import json
import os
import struct
import sys
import unicodedata
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from scipy.sparse import csr_matrix, hstack
from scipy.special import erf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from prompt_features import paired, per_member  # noqa: E402
from response_teacher import FOLDS, SOURCES, equal_weight, fold_of, load, paper_labels, scaled, vectorizer  # noqa: E402

BACKBONE = os.environ.get("LOOKAHEAD_BACKBONE", os.path.expanduser("~/.cache/lookahead/backbones/minilm-l6"))
WINDOW = 256
STRENGTHS = [0.3, 1.0, 3.0, 10.0]
VARIANTS = ["words", "embed", "words+embed"]


def cjk(cp):
    """BERT's CJK ideograph ranges: each such character is a word of its own."""
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
                                             (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
                                             (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


class MiniLM:
    """BERT (all-MiniLM-L6-v2) forward pass in numpy: WordPiece, 6 layers, mean pool, L2."""

    def __init__(self, directory):
        with open(f"{directory}/model.safetensors", "rb") as f:
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
            data = f.read()
        self.w = {
            k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], np.float32).reshape(v["shape"])
            for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"
        }
        with open(f"{directory}/vocab.txt", encoding="utf-8") as f:
            self.vocab = {t.rstrip("\n"): i for i, t in enumerate(f)}

    def words(self, text):
        """BERT's basic tokenizer: lower case, accents stripped, punctuation split off."""
        text = "".join(" " if c.isspace() else f" {c} " if cjk(ord(c)) else c for c in text
                       if c in "\t\n\r" or (ord(c) not in (0, 0xFFFD) and unicodedata.category(c) not in ("Cc", "Cf")))
        out = []
        for w in text.lower().split():
            w = "".join(c for c in unicodedata.normalize("NFD", w) if unicodedata.category(c) != "Mn")
            cur = ""
            for c in w:
                if unicodedata.category(c).startswith("P") or (c.isascii() and not c.isalnum()):
                    out += [cur, c] if cur else [c]
                    cur = ""
                else:
                    cur += c
            if cur:
                out.append(cur)
        return out

    def pieces(self, word):
        """Greedy longest-match WordPiece; a word with no split is one [UNK]."""
        ids, start = [], 0
        while start < len(word) <= 100:
            end = len(word)
            while end > start and (word[start:end] if start == 0 else "##" + word[start:end]) not in self.vocab:
                end -= 1
            if end == start:
                return [self.vocab["[UNK]"]]
            ids.append(self.vocab[word[start:end] if start == 0 else "##" + word[start:end]])
            start = end
        return ids or [self.vocab["[UNK]"]]

    def tokenize(self, text):
        """Word pieces, a head + tail window (a quarter from the start, the rest from the end)."""
        ids = [i for w in self.words(text) for i in self.pieces(w)]
        room = WINDOW - 2
        if len(ids) > room:
            ids = ids[:room // 4] + ids[len(ids) - (room - room // 4):]
        return [self.vocab["[CLS]"]] + ids + [self.vocab["[SEP]"]]

    def forward(self, ids, keep):
        w, (n, t) = self.w, ids.shape

        def norm(x, p):
            m = x.mean(-1, keepdims=True)
            return (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

        x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:t] \
            + w["embeddings.token_type_embeddings.weight"][0]
        x = norm(x, "embeddings.LayerNorm")
        mask = (1.0 - keep[:, None, None, :]) * -1e9
        for layer in range(6):
            p = f"encoder.layer.{layer}."

            def lin(v, name):
                return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def heads(name):
                return lin(x, name).reshape(n, t, 12, 32).transpose(0, 2, 1, 3)

            s = heads("attention.self.query") @ heads("attention.self.key").transpose(0, 1, 3, 2) / np.sqrt(32) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ heads("attention.self.value")).transpose(0, 2, 1, 3).reshape(n, t, 384)
            x = norm(lin(a, "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = lin(x, "intermediate.dense")
            x = norm(lin(0.5 * h * (1 + erf(h / np.sqrt(2))), "output.dense") + x, p + "output.LayerNorm")
        e = (x * keep[:, :, None]).sum(1) / keep.sum(1, keepdims=True)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    def embed(self, texts, batch=32):
        toks = [self.tokenize(t) for t in texts]
        out = np.zeros((len(texts), 384), np.float32)
        order = np.argsort([len(t) for t in toks])
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            width = max(len(toks[i]) for i in idx)
            ids, keep = np.zeros((len(idx), width), np.int64), np.zeros((len(idx), width), np.float32)
            for j, i in enumerate(idx):
                ids[j, :len(toks[i])], keep[j, :len(toks[i])] = toks[i], 1
            out[idx] = self.forward(ids, keep)
        return out


def embeddings(records):
    key = hashlib.sha256("".join(r["id"] for r in records).encode()).hexdigest()[:16]
    path = f"/tmp/sentence-embeddings-{key}.npy"
    if not os.path.exists(path):
        np.save(path, MiniLM(BACKBONE).embed([r["prompt"] for r in records]))
    return np.load(path)


def features(variant, emb, prompts, train, test):
    a, b = [], []
    if "words" in variant:
        v = vectorizer()
        a.append(v.fit_transform([prompts[i] for i in train]))
        b.append(v.transform([prompts[i] for i in test]))
    if "embed" in variant:
        a.append(csr_matrix(emb[train]))
        b.append(csr_matrix(emb[test]))
    return hstack(a).tocsr(), hstack(b).tocsr()


def log_loss(p, y):
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def calibrated(oof, quality, sources, scores, test_sources):
    """Q[s][m] + b[s] (c_m - C[s][m]): lookahead_model::calibration with the true source."""
    out = np.zeros_like(scores)
    for s in SOURCES:
        i, j = sources == s, test_sources == s
        c = oof[i] - oof[i].mean(1, keepdims=True)
        q, cbar = quality[i].mean(0), c.mean(0)
        x, y = c - cbar, quality[i] - quality[i].mean(1, keepdims=True) - (q - q.mean())
        slope = max(0.0, (x * y).sum() / max((x * x).sum(), 1e-12))
        out[j] = q + slope * (scores[j] - scores[j].mean(1, keepdims=True) - cbar)
    return out


def one_fold(job):
    variant, emb, prompts, labels, quality, sources, fold, inner, f = job
    train, test = np.where(fold != f)[0], np.where(fold == f)[0]
    oof = {c: np.zeros((len(train), labels.shape[1])) for c in STRENGTHS}
    for k in range(FOLDS):
        fit, held = train[inner[train] != k], train[inner[train] == k]
        a, b = features(variant, emb, prompts, fit, held)
        for c in STRENGTHS:
            oof[c][inner[train] == k] = per_member(a, labels[fit], b, c)
    c = min(STRENGTHS, key=lambda c: log_loss(oof[c], labels[train]))
    a, b = features(variant, emb, prompts, train, test)
    scores = per_member(a, labels[train], b, c)
    cal = calibrated(oof[c], quality[train] / 100, sources[train], scores, sources[test])
    return test, scores.argmax(1), cal.argmax(1)


def report(name, q, bar, sources, baseline="bar"):
    per = " ".join(f"{s} {q[sources == s].mean():.2f}" for s in SOURCES)
    six = np.mean([(q - bar)[sources == s].mean() for s in SOURCES if s != "MT-Bench"])
    print(f"{name}: {equal_weight(q, sources):.2f} ({per})")
    print(f"  - {baseline} ({equal_weight(bar, sources):.2f}): {paired(q - bar, sources)}; "
          f"without MT-Bench {six:+.2f}")


def leave_one_source_out(variant, records, prompts, sources, quality, labels):
    """Each source routed by a router fitted (C = 1, uncalibrated) on the other sources only,
    against the best single member of those (equal weight): does the embedding carry what a
    router learnt to prompts of a kind it never saw better than the words do?"""
    emb = embeddings(records) if "embed" in variant else None
    routed, fallback = np.zeros(len(records)), np.zeros(len(records))
    for held in SOURCES:
        train, test = np.where(sources != held)[0], np.where(sources == held)[0]
        a, b = features(variant, emb, prompts, train, test)
        routed[test] = quality[test, per_member(a, labels[train], b, 1.0).argmax(1)]
        means = [quality[train][sources[train] == s].mean(0) for s in SOURCES if s != held]
        fallback[test] = quality[test, np.mean(means, 0).argmax()]
    np.save(f"/tmp/sentence-embeddings-{variant}-loso.npy", routed)
    report(f"{variant}, each source unseen", routed, fallback, sources, "best single of the others")
    return routed


def main():
    args = sys.argv[1:]
    loso = "--leave-one-source-out" in args
    if loso:
        args.remove("--leave-one-source-out")
    opts = {}
    for flag in ("--salt", "--versus"):
        if flag in args:
            i = args.index(flag)
            opts[flag] = args[i + 1]
            del args[i:i + 2]
    if not args or args[0] not in VARIANTS:
        sys.exit(f"VARIANT must be one of {VARIANTS}")
    variant, salt = args[0], opts.get("--salt", "")
    manifest, records, models = load(args[1] if len(args) > 1 else "../shared/data/routing")
    prompts = [r["prompt"] for r in records]
    sources = np.array([r["source"] for r in records])
    quality = np.array([scaled(r, manifest, models) for r in records])
    labels = np.array([paper_labels(q) for q in quality])
    if loso:
        routed = leave_one_source_out(variant, records, prompts, sources, quality, labels)
        if "--versus" in opts:
            other = np.load(f"/tmp/sentence-embeddings-{opts['--versus']}-loso.npy")
            print(f"  - {opts['--versus']}: {paired(routed - other, sources)}")
        return
    fold = np.array([fold_of(r["id"], salt) for r in records])
    # Inner folds (for the strength and the calibration) do not move with the salt: the outer
    # assignment is what the salts vary.
    inner = np.array([fold_of("inner" + r["id"], "") for r in records])
    emb = embeddings(records) if "embed" in variant else None
    bar = np.zeros(len(records))
    for f in range(FOLDS):
        for s in SOURCES:
            train, test = (fold != f) & (sources == s), (fold == f) & (sources == s)
            bar[test] = quality[test][:, quality[train].mean(0).argmax()]
    routed = {"raw": np.zeros(len(records), int), "cal": np.zeros(len(records), int)}
    jobs = [(variant, emb, prompts, labels, quality, sources, fold, inner, f) for f in range(FOLDS)]
    with ProcessPoolExecutor(2) as pool:
        for test, raw, cal in pool.map(one_fold, jobs):
            routed["raw"][test], routed["cal"][test] = raw, cal
    for kind, r in routed.items():
        q = quality[np.arange(len(records)), r]
        np.save(f"/tmp/sentence-embeddings-{variant}-{kind}{salt}.npy", q)
        report(f"{variant} {kind}", q, bar, sources)
        if "--versus" in opts:
            other = np.load(f"/tmp/sentence-embeddings-{opts['--versus']}-{kind}{salt}.npy")
            print(f"  - {opts['--versus']} {kind}: {paired(q - other, sources)}")


if __name__ == "__main__":
    main()
