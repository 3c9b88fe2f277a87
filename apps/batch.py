"""Batch generation from a prompt file; same as `anygen batch` (the code lives in anygen/apps/batch.py).

Usage:
    python apps/batch.py PROMPTS.{txt,jsonl} --out DIR [--resume] [--batch-size N] [--model PATH]
    accelerate launch --multi_gpu --num_processes N apps/batch.py PROMPTS --out DIR
"""

import sys

from anygen.cli import main

if __name__ == "__main__":
    sys.exit(main(["batch", *sys.argv[1:]]))
