#!/usr/bin/env python3
"""Times PyTorch sentence-transformers on all-MiniLM-L6-v2 with the same prompts and thread
count as `lookahead bench scorer` (which runs this script and prints both side by side).

Prints one JSON object: {"torch": ver, "threads": n, "rows": [{"name", "tokens", "batch",
"p50_ms", "p99_ms", "per_s"}]}.

Set-up (on demand): pip install torch sentence-transformers
"""
import argparse
import json
import statistics
import time

# Single-token words of the BERT uncased vocabulary: a prompt of n tokens is [CLS] + n-2 words
# + [SEP]. Must match crates/lookahead-cli/src/bench.rs.
WORDS = ["the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with", "be",
         "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but",
         "have", "an", "had", "they", "you", "were", "their"]


def prompt(tokens, salt=0):
    return " ".join(WORDS[(i * 7 + salt) % len(WORDS)] for i in range(max(tokens - 2, 1)))


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="MiniLM directory (HF format)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lengths", default="32,128,512")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.set_num_threads(args.threads)
    word = models.Transformer(args.model, max_seq_length=512)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    model = SentenceTransformer(modules=[word, pool], device="cpu")
    model.eval()
    rows = []
    with torch.inference_mode():
        for n in [int(x) for x in args.lengths.split(",")]:
            p = prompt(n)
            got = len(model.tokenizer(p)["input_ids"])
            for _ in range(3):
                model.encode([p], batch_size=1)
            times = []
            for i in range(args.iters):
                t = time.perf_counter()
                model.encode([prompt(n, i % 3)], batch_size=1)
                times.append((time.perf_counter() - t) * 1000)
            rows.append({"name": "pytorch sentence-transformers", "tokens": got, "batch": 1,
                         "p50_ms": statistics.median(times), "p99_ms": pct(times, 0.99),
                         "per_s": 1000 / statistics.median(times)})
        ps = [prompt(128, i) for i in range(args.batch)]
        model.encode(ps, batch_size=args.batch)
        reps = max(2, args.iters // 10)
        t = time.perf_counter()
        for _ in range(reps):
            model.encode(ps, batch_size=args.batch)
        dt = (time.perf_counter() - t) / reps
        rows.append({"name": "pytorch sentence-transformers", "tokens": 128, "batch": args.batch,
                     "p50_ms": dt * 1000, "p99_ms": None, "per_s": args.batch / dt})
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}))


if __name__ == "__main__":
    main()
