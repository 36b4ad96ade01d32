#!/usr/bin/env python3
"""Keep a reused cargo target directory from growing without bound.

CI reuses $CARGO_TARGET_DIR between runs (builds take minutes, not tens of minutes), but every
change to a workspace crate leaves its old test binaries and rlibs behind under a new hash, and
incremental state grows with every build: a linker that runs out of disk dies with a bus error.
This removes incremental state and, for the workspace's own artifacts (and test executables),
every file but the newest of each name. Third-party rlibs are kept: their hashes change only
when their features or versions do.
Usage: prune-target.py TARGET_DIR
"""
import collections
import os
import re
import shutil
import sys

ARTIFACT = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{16})(?P<ext>\..+)?$")


def prune_deps(deps: str) -> int:
    groups = collections.defaultdict(list)
    for entry in os.scandir(deps):
        m = ARTIFACT.match(entry.name)
        if not m or not entry.is_file(follow_symlinks=False):
            continue
        ext = m.group("ext") or ""
        ours = m.group("name").startswith(("liblookahead", "lookahead")) or ext == ""
        if ours:
            groups[(m.group("name"), ext)].append((entry.stat().st_mtime, entry.path))
    freed = 0
    for files in groups.values():
        files.sort()
        for _, path in files[:-1]:
            freed += os.path.getsize(path)
            os.remove(path)
    return freed


def main() -> None:
    target = sys.argv[1]
    freed = 0
    for root, dirs, _ in os.walk(target):
        for d in list(dirs):
            path = os.path.join(root, d)
            if d == "incremental":
                freed += sum(
                    os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs
                )
                shutil.rmtree(path, ignore_errors=True)
                dirs.remove(d)
            elif d == "deps":
                freed += prune_deps(path)
                dirs.remove(d)
    print(f"prune-target: freed {freed / 1e9:.1f} GB in {target}")


if __name__ == "__main__":
    main()
