#!/usr/bin/env python3
"""The values table of a chart's README.md, from its values.schema.json.

Every value the schema allows is a row: its key, type, default and description (the schema's
`default` and `description`, which every leaf must have). The table sits in README.md between
`<!-- values:begin -->` and `<!-- values:end -->`; `cargo test -p lookahead-cli --test chart`
fails when it is stale, and checks that the schema's defaults are values.yaml.

    scripts/chart-values-doc.py CHART            print the table
    scripts/chart-values-doc.py --write CHART    rewrite it in CHART/README.md
"""
import json
import sys
from pathlib import Path

BEGIN, END = "<!-- values:begin -->", "<!-- values:end -->"


def type_of(node):
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(type_of(alt) for alt in node["oneOf"])
    t = node.get("type", "any")
    if t == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {node['additionalProperties'].get('type', 'any')}"
    if t == "array":
        return f"list of {node.get('items', {}).get('type', 'any')}"
    return t


def rows(node, prefix=""):
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}{key}"
        if child.get("properties"):
            yield from rows(child, path + ".")
            continue
        missing = [k for k in ("description", "default") if k not in child]
        if missing:
            sys.exit(f"values.schema.json: {path} has no {' or '.join(missing)}")
        default = json.dumps(child["default"], separators=(", ", ": "))
        description = " ".join(child["description"].split()).replace("|", "\\|")
        yield f"| `{path}` | {type_of(child)} | `{default}` | {description} |"


def table(chart):
    schema = json.loads((chart / "values.schema.json").read_text())
    lines = ["| value | type | default | description |", "|---|---|---|---|"]
    lines.extend(rows(schema))
    return "\n".join(lines) + "\n"


def main(argv):
    write = "--write" in argv
    args = [a for a in argv if a != "--write"]
    if len(args) != 1:
        sys.exit(__doc__)
    chart = Path(args[0])
    text = table(chart)
    if not write:
        sys.stdout.write(text)
        return
    readme = chart / "README.md"
    old = readme.read_text()
    if BEGIN not in old or END not in old:
        sys.exit(f"{readme}: no {BEGIN} ... {END} section")
    head, rest = old.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}{END}{tail}")
    print(readme, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
