"""Analysis: the paper's evidence as numbers, pure over records (never a model).

    metrics.py    high-PPL ratio, perplexity, categories, pass rate, view overlap, segments; per file and level
    intervals.py  bootstrap intervals over problems and paired comparisons of two runs
    tables.py     the rich tables `stats` prints
    plots.py      the paper's figures (matplotlib, the analysis extra)
    preflight.py  whether the base view finds the answer format's opening tokens plausible

Imports config, errors, schema and store only; never decoding or a verb.
"""
