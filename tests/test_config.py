"""config/ is the one source of every setting: the CLI's options show each field's
default and help, the checks name the setting, and the rule's settings come from the
decode config by name."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from dasd_local import config as C
from dasd_local.cli import app
from dasd_local.runner import RayConfig
from dasd_local.errors import ConfigError

# the config classes behind each command's options; an option none of them declares must
# be listed in NOT_CONFIG (it is about the command, not a setting of the run)
SOURCES = {
    "generate": (C.RunConfig, C.DecodeConfig, RayConfig),
    "eval": (C.EvalConfig, C.DecodeConfig, RayConfig),
    "score": (C.ScoreConfig, RayConfig),
    "verify": (C.VerifyConfig,),
    "train": (C.TrainConfig,),
}
ALIASES = {("eval", "out"): "out_dir", ("eval", "timeout"): "timeout_s", ("verify", "timeout"): "timeout_s",
           ("eval", "ray_workers"): (RayConfig, "workers")}  # eval's --workers are its answer checks
NOT_CONFIG = {("verify", "inp"), ("verify", "out"), ("score", "inp"), ("score", "out")}


def commands() -> dict:
    group = typer.main.get_command(app)
    return {name: group.commands[name] for name in SOURCES}


def field_for(command: str, param: str) -> dataclasses.Field | None:
    name = ALIASES.get((command, param), param)
    if isinstance(name, tuple):
        return C.field_of(*name)
    for cls in SOURCES[command]:
        if name in {f.name for f in dataclasses.fields(cls)}:
            return C.field_of(cls, name)
    return None


@pytest.mark.parametrize("command", sorted(SOURCES))
def test_every_option_takes_default_and_help_from_its_field(command):
    checked = 0
    for param in commands()[command].params:
        f = field_for(command, param.name)
        if f is None:
            assert (command, param.name) in NOT_CONFIG, f"{command} --{param.name} has no config field"
            continue
        assert param.help == f.metadata["help"], f"{command} {param.name}: help differs from its field's"
        if param.required:
            continue  # a positional argument (train DATA): no default to compare
        assert param.default == C.default_of(f), f"{command} {param.name}: default differs from its field's"
        checked += 1
    assert checked >= 3


def test_checked_fields_have_a_range_and_flags_match_their_options():
    for cls in (C.RuleConfig, C.DecodeConfig, C.RunConfig, C.EvalConfig, C.ScoreConfig, C.VerifyConfig, C.TrainConfig,
                RayConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            assert (f.metadata["check"] is None) == (not f.metadata["expect"]), f"{cls.__name__}.{f.name}"
    generate = {o for p in commands()["generate"].params for o in p.opts}
    for f in dataclasses.fields(C.DecodeConfig):
        if f.metadata["flag"]:
            assert f.metadata["flag"] in generate


def test_one_error_style_names_the_flag_the_value_and_the_range():
    with pytest.raises(ConfigError, match=r"^--tau = 1.5 is not allowed: expected in \[0, 1\]$"):
        C.DecodeConfig(tau=1.5)
    with pytest.raises(ConfigError, match=r"^--top-k / top_k = 0 is not allowed: expected >= 1$"):
        C.RuleConfig(top_k=0)
    with pytest.raises(ConfigError, match=r"^--kv = 'both' is not allowed: expected one of auto, split, unified$"):
        C.RunConfig(kv="both")
    with pytest.raises(ConfigError, match=r"^step_tokens|--step-tokens / step_tokens = 8 .*>= 2 x batch = 32"):
        C.DecodeConfig(step_tokens=8, batch=16)
    with pytest.raises(ConfigError, match=r"--step-tokens / step_tokens = 8 .*>= 2 x batch = 64"):
        C.DecodeConfig(step_tokens=8)  # batch auto: up to AUTO_BATCH["gpu"] = 32 problems


def test_rule_config_is_derived_by_name_and_checked():
    d = C.DecodeConfig(top_k=4, tau=0.3, hard_mode="base", hint_beta=1.0)
    assert d.rule() == C.RuleConfig(top_k=4, tau=0.3, hard_mode="base", hint_beta=1.0)
    for f in dataclasses.fields(C.RuleConfig):  # same default, help and range in both
        if f.name == "sampling":  # derived from --baseline-form, not set by itself
            continue
        g = C.field_of(C.DecodeConfig, f.name)
        assert (f.default, f.metadata) == (g.default, g.metadata)
    assert d.rule().sampling == C.GREEDY
    published = C.DecodeConfig(strategy="hint", baseline_form="published")
    assert published.rule().sampling == C.PUBLISHED_SAMPLING["hint"]
    with pytest.raises(ConfigError, match="--baseline-form"):
        C.DecodeConfig(strategy="dasd", baseline_form="published")


def test_eval_holds_a_base_only_decode_config():
    cfg = C.EvalConfig(data="x.jsonl", decode=C.eval_decode(batch=3, max_new_tokens=12))
    assert (cfg.decode.strategy, cfg.decode.base_only, cfg.flat()["batch"]) == ("base", True, 3)
    with pytest.raises(ConfigError, match="decode"):
        C.EvalConfig(data="x.jsonl", decode=C.DecodeConfig())


def test_speculation_policy_follows_the_device():
    assert C.DecodeConfig().for_device(0).spec_rows == 0
    assert C.DecodeConfig().for_device(-1).spec_rows == 512
    assert C.DecodeConfig(spec_rows=64).for_device(-1).spec_rows == 64
