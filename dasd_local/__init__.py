"""dasd-local: Distribution-Aligned Self-Distillation on llama.cpp."""

__version__ = "0.1.0"
