"""The package's shape, checked with the AST (nothing is imported): no import cycle
(counting imports inside functions too); imports point down the layers; only the engine
imports llama.cpp; every settings dataclass lives in config/; no public name is defined in
two modules. (No length caps: a file holds one concept and its length follows; the old
400/60-line caps moved code out of its home. `python scripts/package_size.py` reports
sizes.)"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dasd_local"


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(PKG.parent).with_suffix("").parts).removesuffix(".__init__"): p
            for p in sorted(PKG.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules `name` imports anywhere in its text (relative or absolute)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(max(node.level - 1, 0)):
                base = base.rsplit(".", 1)[0]
            mod = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            found |= {m for m in (mod, *(f"{mod}.{a.name}" for a in node.names)) if m in known}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
    return found - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once per entry point)."""
    found, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                walk(nxt, stack + [nxt])
        state[node] = "done"

    for n in sorted(graph):
        if n not in state:
            walk(n, [n])
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def test_no_import_cycle():
    assert cycles(import_graph()) == []


# Subsystems and what each may import (besides itself). The bottom (config, errors, schema,
# tasks) imports only the bottom; verbs import subsystems, never another verb.
BOTTOM = {"config", "errors", "schema", "tasks"}
VERBS = {"generate", "verify", "evaluate", "score", "train", "stats", "export", "view"}
MAY_IMPORT = {
    "config": BOTTOM, "errors": BOTTOM, "schema": BOTTOM, "tasks": BOTTOM,
    "store": BOTTOM,
    "models": BOTTOM | {"store"},
    "decoding": BOTTOM | {"models"},
    "analysis": BOTTOM | {"store"},
    "runner": BOTTOM | {"store", "models"},
    "training": BOTTOM | {"store", "models", "decoding"},
    "reporting": BOTTOM | {"store", "models", "decoding", "analysis"},
    **{v: BOTTOM | {"store", "models", "decoding", "analysis", "runner", "training", "reporting"} for v in VERBS},
}


def part(module: str) -> str:
    """The subsystem (or verb) a module belongs to: dasd_local.decoding.loop -> decoding."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dasd_local"


def test_imports_point_down_the_layers():
    wrong = []
    for mod, deps in import_graph().items():
        allowed = MAY_IMPORT.get(part(mod))
        if allowed is None:  # cli, __main__, the package itself: the top
            continue
        wrong += [f"{mod} -> {d}" for d in deps if part(d) not in allowed | {part(mod)} and d != "dasd_local"]
    assert wrong == []


def test_every_subsystem_the_layers_name_exists():
    found = {part(m) for m in modules()}
    assert set(MAY_IMPORT) <= found, set(MAY_IMPORT) - found
    assert found - set(MAY_IMPORT) == {"dasd_local", "cli", "__main__"}


def test_only_the_engine_imports_llama_cpp():
    users = set()
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n == "llama_cpp" or n.startswith("llama_cpp.") for n in names):
                users.add(name)
    assert users == {"dasd_local.decoding.engine"}


def settings_classes(path: Path) -> list[str]:
    """Dataclasses whose fields are declared with config.setting()."""
    out = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(c, ast.Call) and getattr(c.func, "id", None) == "setting" for c in ast.walk(node)):
            out.append(node.name)
    return out


def test_every_settings_dataclass_lives_in_config():
    strays = {name: settings_classes(path) for name, path in modules().items() if part(name) != "config"}
    assert {k: v for k, v in strays.items() if v} == {}
    assert "TrainConfig" in settings_classes(PKG / "config" / "train.py")


def public_definitions() -> dict[str, list[str]]:
    """Public top-level names (functions, classes, constants) -> the modules that define them;
    a private module (`_x.py`) and a package's `__init__.py` (re-exports) do not count."""
    found: dict[str, list[str]] = {}
    for name, path in modules().items():
        if path.name.startswith("_"):
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                names = []
            for n in names:
                if not n.startswith("_"):
                    found.setdefault(n, []).append(name)
    return found


def test_no_public_name_is_defined_in_two_modules():
    # (dasd_local/__init__.py's API wraps each verb's own function under the verb's name: a
    # package's __init__ re-exports, it does not count)
    assert {n: mods for n, mods in public_definitions().items() if len(mods) > 1} == {}


def test_the_named_constants_and_readers_have_one_home():
    defs = public_definitions()
    for name, home in (("CATEGORIES", "dasd_local.schema"), ("RECORD_KEYS", "dasd_local.schema"),
                       ("KV_TYPES", "dasd_local.config.run"), ("HIGH_PPL", "dasd_local.config.stats"),
                       ("read_records", "dasd_local.store.records"), ("level_key", "dasd_local.analysis.metrics"),
                       ("kv_need", "dasd_local.decoding.slots"), ("spell_tokens", "dasd_local.reporting.spelling"),
                       ("run", "dasd_local.runner"), ("Bar", "dasd_local.store.progress")):
        assert defs.get(name) == [home], (name, defs.get(name))


if __name__ == "__main__":  # a report: python tests/test_structure.py
    g = import_graph()
    print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges")
    print("cycles:", cycles(g) or "none")
