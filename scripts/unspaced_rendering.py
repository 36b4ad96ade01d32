#!/usr/bin/env python3
"""The routing dataset with every prompt rendered as a script written without spaces: each word
(a run of letters) becomes one to three CJK ideographs chosen by a hash of the lower-cased word,
and the spaces between words go; digits and punctuation stay. The records' ids, sources,
responses and scores are unchanged, so a router's cross-validation on the rendering says how well
its features read a language whose words are not separated, on the real routing problem
(docs/results.md: "Prompts written without spaces").

    scripts/unspaced_rendering.py ../shared/data/routing /tmp/unspaced     # then DATA=/tmp/unspaced scripts/cv.sh

The rendering is a stand-in, not Chinese: one word is always the same ideographs (no ambiguity,
no shared morphemes by meaning) and two words may share an ideograph only by hash collision.
"""
import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

WORD = re.compile(r"[A-Za-z]+")
HAN_FIRST, HAN_COUNT = 0x4E00, 0x9FFF - 0x4E00 + 1


def ideographs(word):
    """One to three ideographs for `word`, the same on every machine."""
    h = int.from_bytes(hashlib.blake2b(word.lower().encode(), digest_size=8).digest(), "little")
    n = 1 + h % 3
    h //= 3
    out = []
    for _ in range(n):
        out.append(chr(HAN_FIRST + h % HAN_COUNT))
        h //= HAN_COUNT
    return "".join(out)


def render(text):
    """`text` with its words as ideographs and the spaces between two words dropped."""
    text = WORD.sub(lambda m: ideographs(m.group(0)), text)
    return re.sub(r"(?<=[\u4e00-\u9fff]) +(?=[\u4e00-\u9fff])", "", text)


def main(src, dst):
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "manifest.json").write_text((src / "manifest.json").read_text())
    for path in sorted(src.glob("*.jsonl.gz")):
        with gzip.open(path, "rt") as f, gzip.open(dst / path.name, "wt") as out:
            for line in f:
                record = json.loads(line)
                record["prompt"] = render(record["prompt"])
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
        print(path.name, file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:3])
