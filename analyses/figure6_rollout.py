"""Paper Figure 6: attention rollout from the output token to the input space, on real photos.

For each model: rollout (and gradient rollout) on scikit-image's photos (astronaut, chelsea, coffee, rocket)
and on Fashion-MNIST test images, plus each head's class-token map of the last layer.
The bundled models know only Fashion-MNIST: their photo figures are out of distribution and say so.

Offline (bundled models):   python analyses/figure6_rollout.py
The paper's checkpoint (online, downloads ~350 MB):
    python analyses/figure6_rollout.py --model timm:vit_base_patch16_224.orig_in21k_ft_in1k --no-fashion
"""
from __future__ import annotations

from _common import analyzer, parser, slug


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--model", nargs="+", default=["demo:vit-fashion", "demo:vit-fashion-ft"])
    options.add_argument("--no-fashion", action="store_true", help="photos only (models trained on natural images)")
    args = options.parse_args()
    analyze = analyzer(args)
    for model in args.model:
        out = args.out / "figure6" / slug(model)
        analyze("rollout", model, out / "photos")
        analyze("heads", model, out / "photos", "--image", "astronaut")
        if not args.no_fashion:
            analyze("rollout", model, out / "fashion_mnist", "--data", "fashion_mnist:test", "--num-images", "6")
            analyze("heads", model, out / "fashion_mnist", "--data", "fashion_mnist:test", "--num-images", "1")


if __name__ == "__main__":
    main()
