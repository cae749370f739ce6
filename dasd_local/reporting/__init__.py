"""Reporting: records shown to people and handed to other tools.

    terminal.py  the rich token view (`view`)
    html.py      the self-contained HTML token report (`view --html`, report_template.html)
    spelling.py  candidate token ids spelled by the run's model
    formats.py   kept records as datasets / parquet / TRL JSONL / ShareGPT rows (`export`)
    card.py      the dataset card of an export (huggingface_hub's DatasetCard)
"""
