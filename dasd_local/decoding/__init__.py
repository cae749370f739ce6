"""Decoding: one GGUF model, two views per problem, one llama.cpp call per step.

    engine.py    the only importer of llama_cpp: model, context, batched decode, KV edits, adapters
    session.py   DecodeSession (model, views tokenized once, context sized) and DecodeJob (runner.run)
    loop.py      Decoder: admit problems, one decode per step, apply the rule, finish
    slots.py     the loop's state (views, slots, counters), kv_need, and the records built from it
    rules.py     pure numpy: each strategy's per-step choice and its token category
    draft.py     prompt-lookup drafts for speculative verification
    views.py     base and reference views through the model's chat template
    baselines.py the baselines' published prompts and SDFT's phrase filter, verbatim
    forcing.py   teacher forcing of any response under both views, and ScoreJob (runner.run)

Imports config, errors, schema, tasks and models only. (No re-exports here: importing one
module must not import numpy and the engine for `dasd-local --help`.)
"""
