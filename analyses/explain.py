"""The explanation benchmark on the bundled models: every attribution method that applies to each model, explaining
the true label of the first 1,000 Fashion-MNIST test images, scored by deletion and insertion in MoRF and LeRF order
(AUCs, SRG) under the mean, blur and (for the ViT) token baselines, against a random map; writes
analyses/results/explain/<model>/.

Offline (bundled models):   python analyses/explain.py
Any other models or data, e.g. the paper's checkpoint on ImageNet val (online):
    python analyses/explain.py --model timm:vit_base_patch16_224.orig_in21k_ft_in1k --data folder:val:1000 \\
        --data-dir ~/imagenet --device cuda
"""
from __future__ import annotations

from _common import analyzer, parser, slug


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--model", nargs="+", default=["demo:vit-fashion", "demo:cnn-fashion"])
    options.add_argument("--data", default="fashion_mnist:test:1000")
    args, extra = options.parse_known_args()  # anything else goes to `vitlens analyze explain`
    analyze = analyzer(args)
    for model in args.model:
        analyze("explain", model, args.out / "explain" / slug(model), "--data", args.data, "--methods", "all",
                "--target", "label", *extra)


if __name__ == "__main__":
    main()
