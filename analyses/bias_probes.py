"""Inductive-bias probes, ViT against CNN, on the bundled Fashion-MNIST models; writes analyses/results/bias/.

    python analyses/bias_probes.py                      # demo:vit-fashion against demo:cnn-fashion
    python analyses/bias_probes.py --model A --model B  # any two load_model sources
    (500 test images for occlusion, 128 for translation, 32 for the ERF: a few minutes on 2 CPU cores)

The same probes on the paper's own checkpoints (online; ImageNet val as an ImageFolder tree val/<wnid>/*.JPEG;
the BiT ResNet runs at its own 448 x 448, the ViT at 224, PatchDrop on 16 x 16 patches for both):

    vitlens analyze bias probes --model timm:vit_base_patch16_224.orig_in21k_ft_in1k \
        --model timm:resnetv2_50x1_bit.goog_in21k_ft_in1k --data folder:val:500 --data-dir ~/imagenet \
        --device cuda --out vitlens-analysis/bias-paper

Without ImageNet, add ``--agreement`` and point ``--data folder`` at any photos: occlusion is then scored against
each model's clean prediction instead of labels.
"""
from __future__ import annotations

import sys

from _common import parser

from vitlens.cli import main

if __name__ == "__main__":
    options = parser(__doc__)
    options.add_argument("--model", action="append", help="load_model sources (default: the two demo models)")
    options.add_argument("--data", default="fashion_mnist:test:500")
    args, extra = options.parse_known_args()  # anything else goes to `vitlens analyze bias probes`
    models = args.model or ["demo:vit-fashion", "demo:cnn-fashion"]
    sys.exit(main(["analyze", "bias", "probes", *[a for m in models for a in ("--model", m)], "--data", args.data,
                   "--out", str(args.out / "bias"), "--plotlyjs", "cdn", "--translation-images", "128",
                   "--erf-images", "32", *(["--no-png"] if args.no_png else []), *extra]))
