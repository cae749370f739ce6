"""Store: what goes to and comes from disk, crash-safely.

    problems.py     rows from JSONL/JSON/parquet files, hub datasets or rows in memory -> Problems
    demo.py         the embedded demo problem set
    records.py      JSONL reading (one reader), appends, atomic rewrites, resume, sha256, versions
    lock.py         one writer per output: flock held for the run, the holder's pid in the refusal
    fingerprint.py  what an output was made with; a rerun resumes only the same run
    progress.py     the one progress bar of every long step

Imports config, errors, schema and tasks only.
"""
