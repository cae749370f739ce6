/work/snap/.venv/bin/python -m dasd_local eval --data ../shared/data/mbpp/test.jsonl --task code --answer-format code-block -o /work/main/runs/table1/eval/origin --model qwen2.5-coder-0.5b --max-new-tokens 512 --batch 16
/work/snap/.venv/bin/python -m dasd_local score ../shared/data/mbpp/train.jsonl --task code --answer-format code-block -o /work/main/runs/table1/data/gold.jsonl --model qwen2.5-coder-0.5b
/work/snap/.venv/bin/python -m dasd_local train /work/main/runs/table1/data/gold.jsonl -o /work/main/runs/table1/train/sft --model qwen2.5-coder-0.5b --epochs 2 --save-every 8
/work/snap4/.venv/bin/python -m dasd_local train /work/main/runs/table1/data/gold.jsonl -o /work/main/runs/table1/train/sft --model qwen2.5-coder-0.5b --epochs 2 --save-every 8
/work/main/.venv/bin/python -m dasd_local score ../shared/data/mbpp/train.jsonl --task code --answer-format code-block -o /work/runs/table1/data/gold.jsonl --model qwen2.5-coder-0.5b
/work/main/.venv/bin/python -m dasd_local train /work/runs/table1/data/gold.jsonl -o /work/runs/table1/train/sft --model qwen2.5-coder-0.5b --epochs 2 --save-every 8 --no-grad-checkpoint
/work/main/.venv/bin/python -m dasd_local train /work/runs/table1/data/gold.jsonl -o /work/runs/table1/train/sft --model qwen2.5-coder-0.5b --epochs 2 --save-every 8 --no-grad-checkpoint
/work/main/.venv/bin/python -m dasd_local eval --data ../shared/data/mbpp/test.jsonl --task code --answer-format code-block -o /work/runs/table1/eval/sft --model qwen2.5-coder-0.5b --max-new-tokens 512 --batch 16 --adapter /work/runs/table1/train/sft/adapter.gguf
