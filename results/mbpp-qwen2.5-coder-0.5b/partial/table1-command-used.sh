# Table 1 (issue 26): the protocol in results/mbpp-qwen2.5-coder-0.5b/PROTOCOL.md; resumable: rerun the same command.
cd /work/snap-t1
export PYTHONPATH=/work/snap-t1
/work/main/.venv/bin/python scripts/reproduce.py --model qwen2.5-coder-0.5b --task code \
  --train-data ../shared/data/mbpp/train.jsonl --eval-data ../shared/data/mbpp/test.jsonl --train-limit 0 \
  --max-new-tokens 512 --batch 16 --answer-format code-block --train-args "--epochs 2 --save-every 8" \
  --strategies sft,self-distill,dasd,mask-ppl,hint --out /work/runs/table1 \
  --publish /work/main/results/mbpp-qwen2.5-coder-0.5b "$@"
