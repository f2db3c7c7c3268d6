"""Linear evaluation of frozen features (paper section 4.1): the closed-form few-shot regression to {-1, 1}^K
targets at 1/5/10/25 shots (5 random draws each) and a logistic-regression probe, at every layer, for the ViT
and the CNN; plus the layer-by-layer CKA between them.

Offline (bundled models, Fashion-MNIST):   python analyses/fewshot.py
Online, with the paper's checkpoint and a BiT ResNet (an ImageFolder at DIR/{train,test}/<class>/*.jpg):
    python analyses/fewshot.py --vit timm:vit_base_patch16_224.orig_in21k_ft_in1k \\
        --cnn timm:resnetv2_50x1_bit.goog_in21k_ft_in1k --data folder --data-dir DIR
"""
from __future__ import annotations

from _common import analyzer, parser, slug


def main() -> None:
    options = parser(__doc__)
    options.add_argument("--vit", default="demo:vit-fashion")
    options.add_argument("--cnn", default="demo:cnn-fashion")
    options.add_argument("--data", default="fashion_mnist")
    options.add_argument("--data-dir", help="where the dataset's files are")
    options.add_argument("--train-limit", default="10000")
    options.add_argument("--test-limit", default="2000")
    options.add_argument("--cka-limit", default="1024", help="test images for the CKA")
    args = options.parse_args()
    analyze = analyzer(args)
    data_dir = ["--data-dir", args.data_dir] if args.data_dir else []
    for model in (args.vit, args.cnn):
        analyze("probe", model, args.out / "fewshot" / slug(model), "--data", args.data, "--train-limit",
                args.train_limit, "--test-limit", args.test_limit, *data_dir)
    analyze("cka", args.vit, args.out / "cka" / f"{slug(args.vit)}_vs_{slug(args.cnn)}", "--against", args.cnn,
            "--data", f"{args.data}:test", "--limit", args.cka_limit, *data_dir)


if __name__ == "__main__":
    main()
