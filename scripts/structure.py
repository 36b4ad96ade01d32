#!/usr/bin/env python3
"""Structure checks for the workspace (issue 16): long functions and import circles.

    scripts/structure.py [CRATE_DIR ...]        (default: every crates/*)

1. Functions longer than --max-lines (80) counted in code lines (blank and comment lines left out,
   and lines inside object literals: struct literals `Name { .. }` and `json!(..)`), outside tests
   (`tests/`, `#[cfg(test)]` modules and files, `#[test]` functions).
2. Import circles between sibling modules of one crate: module a::b naming a::c (through `use` or
   a `crate::`/`super::` path, re-exports resolved) is an edge b -> c inside a; edges between a
   module and its own ancestors are the usual parent/child pattern and are not counted.
3. Dependency circles between the crates themselves, dev-dependencies included.

Exit status 1 when anything is found, so CI can run it. Reads text only: a rough lexer, no rustc.
"""
import argparse
import os
import re
import sys

TOKEN = re.compile(
    r"""(?P<ws>\s+)|(?P<lc>//[^\n]*)|(?P<bc>/\*)|(?P<raw>b?r(?P<hashes>\#*)")|(?P<str>b?")|"""
    r"""(?P<chr>b?'(?:\\.|[^\\'])')|(?P<life>'[A-Za-z_][A-Za-z0-9_]*)|"""
    r"""(?P<id>[A-Za-z_][A-Za-z0-9_]*!?)|(?P<num>[0-9][0-9A-Za-z_.]*)|(?P<p>::|->|=>|.)""",
    re.S,
)


def lex(src):
    """Tokens as (kind, text, line); strings and comments become one token (code lines only)."""
    out, i, line = [], 0, 1
    while i < len(src):
        m = TOKEN.match(src, i)
        kind = m.lastgroup if m.lastgroup != "hashes" else "raw"
        if kind == "bc":
            depth, j = 1, i + 2
            while j < len(src) and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            line += src.count("\n", i, j)
            i = j
            continue
        if kind == "raw":
            end = '"' + m.group("hashes")
            j = src.find(end, m.end())
            j = len(src) if j < 0 else j + len(end)
            out.append(("str", "", line))
            line += src.count("\n", i, j)
            i = j
            continue
        if kind == "str":
            j = m.end()
            while j < len(src) and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(("str", "", line))
            line += src.count("\n", i, j)
            i = j
            continue
        if kind not in ("ws", "lc"):
            out.append((kind, m.group(0), line))
        line += m.group(0).count("\n")
        i = m.end()
    return out


def matching(tokens, start):
    """Index of the bracket closing tokens[start]."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    open_, close, depth = tokens[start][1], pairs[tokens[start][1]], 0
    for k in range(start, len(tokens)):
        if tokens[k][1] == open_:
            depth += 1
        elif tokens[k][1] == close:
            depth -= 1
            if depth == 0:
                return k
    return len(tokens) - 1


def literal_lines(tokens, lo, hi):
    """Lines of a body inside struct literals or json!() macros: object literals, not logic."""
    lines = set()
    k = lo
    while k < hi:
        kind, text, _ = tokens[k]
        nxt = tokens[k + 1][1] if k + 1 < hi else ""
        prev = tokens[k - 1][1] if k > 0 else ""
        is_struct = (kind == "id" and text[0].isupper() and nxt == "{"
                     and prev not in ("struct", "enum", "union", "trait", "impl", "for", "->", "mod"))
        is_json = kind == "id" and text == "json!" and nxt in ("(", "{")
        if is_struct or is_json:
            end = matching(tokens, k + 1)
            lines.update(range(tokens[k + 1][2] + 1, tokens[end][2]))
            k = end
        k += 1
    return lines


def test_ranges(tokens):
    """Token ranges that are test code: #[cfg(test)] items and #[test] functions."""
    ranges = []
    for k, (kind, text, _) in enumerate(tokens):
        if text != "#" or k + 2 >= len(tokens) or tokens[k + 1][1] != "[":
            continue
        attr_end = matching(tokens, k + 1)
        attr = " ".join(t[1] for t in tokens[k + 2:attr_end])
        if not (attr.startswith("cfg ( test") or attr in ("test", "tokio :: test") or "tokio :: test (" in attr):
            continue
        j = attr_end + 1
        while j < len(tokens) and tokens[j][1] not in ("{", ";"):
            j += 1
        if j < len(tokens) and tokens[j][1] == "{":
            ranges.append((k, matching(tokens, j)))
    return ranges


def long_functions(path, max_lines):
    with open(path, encoding="utf-8") as f:
        tokens = lex(f.read())
    tests = test_ranges(tokens)
    code_lines = {t[2] for t in tokens}
    found = []
    for k, (kind, text, line) in enumerate(tokens):
        if text != "fn" or k + 1 >= len(tokens) or tokens[k + 1][0] != "id":
            continue
        if any(lo <= k <= hi for lo, hi in tests):
            continue
        j, depth = k, 0
        while j < len(tokens):
            t = tokens[j][1]
            if t in ("(", "["):
                depth += 1
            elif t in (")", "]"):
                depth -= 1
            elif t in (";", "{") and depth == 0:
                break
            j += 1
        if j >= len(tokens) or tokens[j][1] != "{":
            continue
        end = matching(tokens, j)
        body = {ln for ln in code_lines if tokens[k][2] <= ln <= tokens[end][2]}
        n = len(body - literal_lines(tokens, j + 1, end))
        if n > max_lines:
            found.append((path, line, tokens[k + 1][1], n))
    return found


def module_files(src):
    """{module path tuple: file} for a crate's src/."""
    mods = {}
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            mods[tuple(rel)] = os.path.join(root, name)
    return mods


def test_only_files(mods):
    """Files declared `#[cfg(test)] mod x;`: test scaffolding."""
    skip = set()
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", f.read()):
                child = mod + (m.group(1),)
                if child in mods:
                    skip.add(mods[child])
    return skip


def reexports(mods):
    """{(module, name): defining module} from `pub use` lines, so `crate::Foo` finds Foo's home."""
    table = {}
    for mod, path in mods.items():
        with open(path, encoding="utf-8") as f:
            src = f.read()
        for m in re.finditer(r"pub(?:\([^)]*\))?\s+use\s+([^;]+);", src):
            for target in expand_use(m.group(1)):
                parts = resolve(mod, target)
                if parts:
                    table[(mod, parts[-1])] = parts[:-1]
    return table


def expand_use(tree):
    """`a::{b, c::d}` -> ["a::b", "a::c::d"] (one level of braces, nested ones flattened)."""
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^(.*?)\{(.*)\}$", tree)
    if not m:
        return [re.sub(r"as\w+$", "", tree)]
    head, items, depth, cur, out = m.group(1), [], 0, "", []
    for ch in m.group(2):
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    for item in filter(None, items):
        out += expand_use(head + item)
    return out


def resolve(mod, path):
    """A `crate::`/`super::`/`self::` path as absolute segments, or None for external paths."""
    segs = [s for s in path.split("::") if s]
    if not segs:
        return None
    if segs[0] == "crate":
        return segs[1:]
    base = list(mod)
    if segs[0] == "self":
        return base + segs[1:]
    if segs[0] == "super":
        while segs and segs[0] == "super":
            base, segs = base[:-1], segs[1:]
        return base + segs
    return None


def home(mods, table, parts):
    """The module an absolute path points into (longest known module prefix, re-exports followed)."""
    for _ in range(4):
        k = len(parts)
        while k > 0 and tuple(parts[:k]) not in mods:
            k -= 1
        mod, rest = tuple(parts[:k]), parts[k:]
        if rest and (mod, rest[0]) in table and table[(mod, rest[0])] != list(mod):
            parts = table[(mod, rest[0])] + rest
            continue
        return mod
    return mod


def import_edges(mods, skip):
    table = reexports(mods)
    edges = set()
    path_re = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
    for mod, path in mods.items():
        if path in skip:
            continue
        with open(path, encoding="utf-8") as f:
            # Comments (doc links included) name paths without importing them.
            src = re.sub(r"//[^\n]*", "", strip_tests(f.read()))
        targets = [t for m in re.finditer(r"\buse\s+([^;]+);", src) for t in expand_use(m.group(1))]
        targets += path_re.findall(src)
        for target in targets:
            parts = resolve(mod, target)
            if parts is None:
                continue
            dest = home(mods, table, parts)
            if dest == mod or not dest:
                continue
            common = 0
            while common < min(len(mod), len(dest)) and mod[common] == dest[common]:
                common += 1
            if common in (len(mod), len(dest)):
                continue  # parent and child: not a circle between siblings
            edges.add((mod[:common], mod[common], dest[common]))
    return edges


def strip_tests(src):
    """Source without its #[cfg(test)] blocks (tests may import anything)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(?:pub\s+)?mod\s+\w+\s*\{", src):
        if m.start() < i:
            continue
        depth, j = 1, m.end()
        while j < len(src) and depth:
            depth += src[j] == "{"
            depth -= src[j] == "}"
            j += 1
        out.append(src[i:m.start()])
        i = j
    out.append(src[i:])
    return "".join(out)


def circles(edges):
    """Strongly connected groups (size > 1) among siblings, per parent module."""
    found = []
    parents = {e[0] for e in edges}
    for parent in sorted(parents):
        graph = {}
        for p, a, b in edges:
            if p == parent:
                graph.setdefault(a, set()).add(b)
                graph.setdefault(b, set())
        found += [(parent, c) for c in tarjan(graph) if len(c) > 1]
    return found


def tarjan(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check_crate(crate, max_lines):
    src = os.path.join(crate, "src")
    mods = module_files(src)
    skip = test_only_files(mods)
    problems = 0
    for path in sorted(set(mods.values()) - skip):
        for file, line, name, n in long_functions(path, max_lines):
            print(f"{file}:{line}: fn {name} is {n} lines (> {max_lines})")
            problems += 1
    for parent, comp in circles(import_edges(mods, skip)):
        where = "::".join(parent) or "crate root"
        print(f"{crate}: import circle under {where}: {' <-> '.join(comp)}")
        problems += 1
    return problems


def crate_circles(crates):
    """Cycles between the workspace's crates, dev-dependencies included (cargo allows those)."""
    graph = {}
    for crate in crates:
        name = os.path.basename(crate)
        graph.setdefault(name, set())
        section = None
        with open(os.path.join(crate, "Cargo.toml"), encoding="utf-8") as f:
            for line in f:
                if line.startswith("["):
                    section = line.strip()
                elif section in ("[dependencies]", "[dev-dependencies]", "[build-dependencies]"):
                    m = re.match(r"(lookahead-[\w-]+)\s*=", line)
                    if m:
                        graph[name].add(m.group(1))
    for deps in list(graph.values()):
        for d in deps:
            graph.setdefault(d, set())
    return [c for c in tarjan(graph) if len(c) > 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("crates", nargs="*")
    ap.add_argument("--max-lines", type=int, default=80)
    args = ap.parse_args()
    crates = args.crates or sorted(
        os.path.join("crates", d) for d in os.listdir("crates") if os.path.isdir(os.path.join("crates", d, "src")))
    problems = sum(check_crate(c, args.max_lines) for c in crates)
    for comp in crate_circles(crates):
        print(f"crate circle: {' <-> '.join(comp)}")
        problems += 1
    print(f"structure: {problems} finding(s) in {len(crates)} crate(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
