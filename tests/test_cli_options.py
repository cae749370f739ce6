"""Every verb's options, their defaults and flag forms are those of the snapshot taken
before the package was reorganized into subpackages (tests/cli_options.snapshot.json):
a refactor that builds the options another way must not change what a user types.
Regenerate on purpose only: python tests/test_cli_options.py > tests/cli_options.snapshot.json"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).with_name("cli_options.snapshot.json")


def snapshot() -> dict:
    """{verb: {'--opt/-o[ | --no-opt]': [kind, default, is_flag, required]}} from the real click commands."""
    import typer.main

    from dasd_local.cli import app

    out = {}
    for name, sub in sorted(typer.main.get_command(app).commands.items()):
        opts = {}
        for p in sub.params:
            key = "/".join(sorted(p.opts))
            if getattr(p, "secondary_opts", None):
                key += " | " + "/".join(sorted(p.secondary_opts))
            d = p.default
            d = list(d) if isinstance(d, (list, tuple)) else d
            d = d if isinstance(d, (int, float, str, bool, type(None), list)) else str(d)
            opts[key] = [p.param_type_name, d, bool(getattr(p, "is_flag", False)), bool(p.required)]
        out[name] = opts
    return out


def test_every_verb_keeps_its_options_and_defaults():
    want, got = json.loads(SNAPSHOT.read_text()), snapshot()
    assert sorted(got) == sorted(want)
    for verb in want:
        missing = sorted(set(want[verb]) - set(got[verb]))
        extra = sorted(set(got[verb]) - set(want[verb]))
        assert not missing and not extra, f"{verb}: missing {missing}, new {extra}"
        changed = {k: (want[verb][k], got[verb][k]) for k in want[verb] if want[verb][k] != got[verb][k]}
        assert not changed, f"{verb}: (before, now) {changed}"


if __name__ == "__main__":
    json.dump(snapshot(), sys.stdout, indent=1, sort_keys=True)
