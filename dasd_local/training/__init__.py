"""Training: LoRA on kept records (transformers' Trainer + TRL's chunked head; PEFT or Unsloth).

    data.py   records -> token ids and labels (llama.cpp's vocabulary), --mask-ppl
    model.py  the base model (GGUF dequantized by transformers, or an HF checkpoint), LoRA, loss math
    loop.py   the Trainer, its callbacks (train_log.jsonl, the progress bar)
    gguf.py   a PEFT adapter -> a llama.cpp GGUF adapter (and a merged model)

The `train` verb (dasd_local/train.py) owns the run directory around these.
"""
