"""Paper Figure 6: attention rollout from the output token to the input space, on real photos.

For each model: rollout (and gradient rollout) on scikit-image's photos (astronaut, chelsea, coffee, rocket)
and on Fashion-MNIST test images, plus each head's class-token map of the last layer.
The bundled models know only Fashion-MNIST: their photo figures are out of distribution and say so.

Offline (bundled models):   python analyses/figure6_rollout.py
The paper's checkpoint (online, downloads ~350 MB):
    python analyses/figure6_rollout.py --model timm:vit_base_patch16_224.orig_in21k_ft_in1k --no-fashion
"""
from __future__ import annotations

import argparse

from _common import RESULTS, analyze, slug


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["demo:vit-fashion", "demo:vit-fashion-ft"])
    parser.add_argument("--no-fashion", action="store_true", help="photos only (models trained on natural images)")
    args = parser.parse_args()
    for model in args.model:
        out = RESULTS / "figure6" / slug(model)
        analyze("rollout", model, out / "photos")
        analyze("heads", model, out / "photos", "--image", "astronaut")
        if not args.no_fashion:
            analyze("rollout", model, out / "fashion_mnist", "--data", "fashion_mnist:test", "--num-images", "6")
            analyze("heads", model, out / "fashion_mnist", "--data", "fashion_mnist:test", "--num-images", "1")


if __name__ == "__main__":
    main()
