"""Report the package's size: lines per module and its longest functions (a report, not a
gate: tests/test_structure.py checks the layers, not lengths).

    python scripts/package_size.py [--functions N]
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dasd_local"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--functions", type=int, default=10, help="how many of the longest functions to list")
    a = ap.parse_args()
    rows, funcs = [], []
    for path in sorted(PKG.rglob("*.py")):
        text = path.read_text()
        rel = path.relative_to(PKG.parent)
        rows.append((len(text.splitlines()), str(rel)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                funcs.append((node.end_lineno - node.lineno + 1, f"{rel}:{node.lineno} {node.name}"))
    by_package: dict[str, int] = {}
    for n, rel in rows:
        parts = Path(rel).parts
        key = parts[1] if len(parts) > 2 else "(top level)"
        by_package[key] = by_package.get(key, 0) + n
    print(f"{len(rows)} modules, {sum(n for n, _ in rows)} lines")
    for key, n in sorted(by_package.items(), key=lambda kv: -kv[1]):
        print(f"  {n:6d}  {key}")
    print("modules:")
    for n, rel in sorted(rows, reverse=True):
        print(f"  {n:6d}  {rel}")
    print(f"longest functions (top {a.functions}):")
    for n, where in sorted(funcs, reverse=True)[: a.functions]:
        print(f"  {n:6d}  {where}")


if __name__ == "__main__":
    main()
