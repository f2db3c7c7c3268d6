"""Linear evaluation of frozen features (paper section 4.1): the closed-form few-shot regression to {-1, 1}^K
targets at 1/5/10/25 shots (5 random draws each) and a logistic-regression probe, at every layer, for the ViT
and the CNN; plus the layer-by-layer CKA between them.

Offline (bundled models, Fashion-MNIST):   python analyses/fewshot.py
Online, with the paper's checkpoint and a BiT ResNet (an ImageFolder at DIR/{train,test}/<class>/*.jpg):
    python analyses/fewshot.py --vit timm:vit_base_patch16_224.orig_in21k_ft_in1k \\
        --cnn timm:resnetv2_50x1_bit.goog_in21k_ft_in1k --data folder --data-dir DIR
"""
from __future__ import annotations

import argparse

from _common import RESULTS, analyze, slug


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vit", default="demo:vit-fashion")
    parser.add_argument("--cnn", default="demo:cnn-fashion")
    parser.add_argument("--data", default="fashion_mnist")
    parser.add_argument("--data-dir", help="where the dataset's files are")
    parser.add_argument("--train-limit", default="10000")
    parser.add_argument("--test-limit", default="2000")
    args = parser.parse_args()
    data_dir = ["--data-dir", args.data_dir] if args.data_dir else []
    for model in (args.vit, args.cnn):
        analyze("probe", model, RESULTS / "fewshot" / slug(model), "--data", args.data, "--train-limit",
                args.train_limit, "--test-limit", args.test_limit, *data_dir)
    analyze("cka", args.vit, RESULTS / "cka" / f"{slug(args.vit)}_vs_{slug(args.cnn)}", "--against", args.cnn,
            "--data", f"{args.data}:test", "--limit", "1024", *data_dir)


if __name__ == "__main__":
    main()
