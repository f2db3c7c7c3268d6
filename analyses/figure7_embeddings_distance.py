"""Paper Figure 7: patch-embedding filters (left), position-embedding similarity (centre) and mean attention
distance per head against depth (right, over 128 images as in the paper).

Offline (bundled models, Fashion-MNIST):   python analyses/figure7_embeddings_distance.py
The paper's checkpoints (online; distance over 128 images of your own folder, DIR/val/<class>/*.jpg):
    python analyses/figure7_embeddings_distance.py --model timm:vit_large_patch32_384.orig_in21k_ft_in1k \\
        timm:vit_base_patch16_224.orig_in21k_ft_in1k --data folder:val:128 --data-dir DIR
"""
from __future__ import annotations

from _common import analyzer, parser, slug


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--model", nargs="+", default=["demo:vit-fashion", "demo:vit-fashion-ft"])
    options.add_argument("--data", default="fashion_mnist:test:128", help="dataset SPEC for attention distance")
    options.add_argument("--data-dir", help="where the dataset's files are")
    options.add_argument("--resize", default="40", help="also show position similarity interpolated to this size "
                         "(40: the resolution demo:vit-fashion-ft was fine-tuned at)")
    args = options.parse_args()
    analyze = analyzer(args)
    data = ["--data", args.data] + (["--data-dir", args.data_dir] if args.data_dir else [])
    for model in args.model:
        out = args.out / "figure7" / slug(model)
        analyze("filters", model, out)
        analyze("posembed", model, out, "--img-size", args.resize)
        analyze("distance", model, out, *data, "--limit", "128")


if __name__ == "__main__":
    main()
