"""The data-size sweep (paper section 4.3 in miniature): ViT vs CNN test accuracy against Fashion-MNIST training-set
size; writes analyses/results/bias/sweep.{json,html,png}.

    python analyses/bias_sweep.py            # one process per seed, one thread each
    python analyses/bias_sweep.py --redraw   # only redraw the figure from sweep.json

Budget rule: every run, whatever its size or architecture, takes the same number of AdamW steps of the same batch
(the packaged recipes, with the augmentation pinned in vitlens/bias/sweep.py; warm-up 10 % of the steps). The
committed results took 67 minutes of wall time on a 2-core CPU (two demo trainings ran beside it at the lowest
priority). Each seed runs in its own single-threaded process, which on a 2-core CPU is faster than one process with
two threads for models this small. Points already in a seed's JSON are kept, so an interrupted sweep continues where
it stopped. The same sweep in one process:
``vitlens analyze bias sweep --sizes 1000 3000 10000 30000 60000 --seeds 0 1 --steps 1000 --batch-size 64
--eval-subset 5000``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

from _common import parser

from vitlens.analysis.figures import write_outputs
from vitlens.bias.figures import sweep_figure
from vitlens.bias.sweep import summarise
from vitlens.train.sweep import run_sweep


def one_seed(seed: int, args: argparse.Namespace) -> list[dict]:
    return run_sweep(args.out / "bias" / f"sweep-seed{seed}.json", sizes=args.sizes, seeds=(seed,), steps=args.steps,
                     batch_size=args.batch_size, threads=1, eval_subset=args.eval_images,
                     runs_dir=args.runs_dir)["records"]


if __name__ == "__main__":
    options = parser(__doc__)
    options.add_argument("--redraw", action="store_true", help="redraw the figure from sweep.json; train nothing")
    options.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 10000, 30000, 60000])
    options.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one process per seed")
    options.add_argument("--steps", type=int, default=1000, help="optimizer steps of every run (the budget)")
    options.add_argument("--batch-size", type=int, default=64)
    options.add_argument("--eval-images", type=int, default=5000, help="test images scored")
    options.add_argument("--runs-dir", type=Path, default=Path("runs/bias-sweep"))
    args = options.parse_args()
    OUT, STEPS, BATCH, EVAL_IMAGES = args.out / "bias", args.steps, args.batch_size, args.eval_images
    if args.redraw:
        result = json.loads((OUT / "sweep.json").read_text())
    else:
        with ProcessPoolExecutor(len(args.seeds), mp_context=multiprocessing.get_context("spawn")) as pool:
            records = [r for seed_records in pool.map(partial(one_seed, args=args), args.seeds) for r in seed_records]
        first = json.loads((OUT / f"sweep-seed{args.seeds[0]}.json").read_text())
        result = {**first, "records": records, "summary": summarise(records)}
    vit, cnn = result["models"]["vit"], result["models"]["cnn"]
    params = {r["arch"]: r["params"] for r in result["records"]}
    title = (f"Fashion-MNIST test accuracy against training-set size<br><sup>ViT dim {vit['embed_dim']}, depth "
             f"{vit['depth']}, patch 4 ({params['vit'] / 1e3:.0f}k parameters) vs ResNet, blocks {cnn['layers']}, widths "
             f"{cnn['channels']} "
             f"({params['cnn'] / 1e3:.0f}k)</sup><br><sup>both {STEPS} steps x batch {BATCH}; first N training images; "
             f"{EVAL_IMAGES} test images</sup>")
    write_outputs(OUT, {"sweep": sweep_figure(result["summary"], title, budget_images=STEPS * BATCH)}, result,
                  png=not args.no_png, plotlyjs="cdn")
