"""The data-size sweep (paper section 4.3 in miniature): ViT vs CNN test accuracy against Fashion-MNIST training-set
size; writes analyses/results/bias/sweep.{json,html,png}. Points already in sweep.json are kept, so a rerun only
redraws the figure and an interrupted run continues.

    python analyses/bias_sweep.py

Budget rule: every run, whatever its size or architecture, takes the same number of AdamW steps of the same batch
(the packaged recipes, warm-up 10 % of the steps). The defaults below took about 30 minutes on 2 CPU cores.
"""
from __future__ import annotations

import sys
from pathlib import Path

from vitlens.cli import main

OUT = Path(__file__).resolve().parent / "results" / "bias"
SIZES = (1000, 3000, 10000, 30000, 60000)
SEEDS = (0, 1)
STEPS, BATCH, EVAL_IMAGES = 400, 128, 5000

if __name__ == "__main__":
    sys.exit(main(["analyze", "bias", "sweep", "--sizes", *map(str, SIZES), "--seeds", *map(str, SEEDS),
                   "--steps", str(STEPS), "--batch-size", str(BATCH), "--eval-subset", str(EVAL_IMAGES),
                   "--threads", "2", "--out", str(OUT), "--plotlyjs", "cdn", *sys.argv[1:]]))
