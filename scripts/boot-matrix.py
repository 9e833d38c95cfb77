#!/usr/bin/env python3
"""docs/boot-matrix.md's table, rendered from what the tests proved in this run.

Every test that proves a cell of the IPv6 boot matrix (a client booting or configuring itself
over a path) writes target/boot-matrix/CLIENT--PATH.json when it passes
(crates/cli/tests/common/lab.rs: proved_cell). This renders the table from those records:

  scripts/boot-matrix.py --write   rewrite the table in docs/boot-matrix.md
  scripts/boot-matrix.py --check   fail when the committed table differs from this run's
                                   (a cell claimed that no test proved, or a proved cell missing)

`make unit` clears target/boot-matrix before the tests and runs --check after them.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECORDS = ROOT / "target" / "boot-matrix"
DOC = ROOT / "docs" / "boot-matrix.md"
BEGIN, END = "<!-- boot-matrix:begin (scripts/boot-matrix.py --write) -->", "<!-- boot-matrix:end -->"
CLIENTS = ["OVMF HTTP", "OVMF HTTPS", "OVMF PXE", "iPXE", "installer", "installed OS", "dhclient", "dhcpcd"]
PATHS = ["direct", "relayed"]


def table():
    cells = {}
    for f in sorted(RECORDS.glob("*.json")):
        r = json.loads(f.read_text())
        if r["client"] not in CLIENTS or r["path"] not in PATHS:
            sys.exit(f"boot-matrix: {f}: unknown client or path {r['client']!r} / {r['path']!r}")
        cells[(r["client"], r["path"])] = r
    lines = ["| client | " + " | ".join(PATHS) + " |", "|---|" + "---|" * len(PATHS)]
    for c in CLIENTS:
        row = []
        for p in PATHS:
            r = cells.get((c, p))
            row.append(f"proved by `{r['test']}` ({r['evidence']})" if r else "not proved")
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n", len(cells)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "--check"
    rendered, n = table()
    doc = DOC.read_text()
    head, rest = doc.split(BEGIN + "\n", 1)
    committed, tail = rest.split(END, 1)
    if mode == "--write":
        DOC.write_text(head + BEGIN + "\n" + rendered + END + tail)
        print(f"boot-matrix: {n} cells proved; wrote {DOC.relative_to(ROOT)}")
    elif mode == "--check":
        if committed != rendered:
            old, new = set(committed.splitlines()), set(rendered.splitlines())
            diff = [f"- {l}" for l in committed.splitlines() if l not in new]
            diff += [f"+ {l}" for l in rendered.splitlines() if l not in old]
            sys.exit(
                "boot-matrix: docs/boot-matrix.md does not match what this run's tests proved "
                "(a skipped or failed test, or a new cell: scripts/boot-matrix.py --write):\n" + "\n".join(diff)
            )
        print(f"boot-matrix: docs/boot-matrix.md matches this run ({n} cells proved)")
    else:
        sys.exit("usage: boot-matrix.py --write|--check")


main()
