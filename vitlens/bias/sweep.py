"""The paper's data-size claim in miniature: test accuracy of a ViT and a CNN against training-set size.

Dosovitskiy et al. (2020, section 4.3 and Fig. 3-4) find that ResNets beat ViTs when pre-trained on small data
and ViTs catch up and overtake them as the data grows ("large scale training trumps inductive bias"). The sweep
trains both with the training issue's recipe (``vitlens/configs/fashion_{vit,cnn}.yaml``: AdamW, linear warm-up,
cosine decay, label smoothing, pad-and-crop and flips) on the first N Fashion-MNIST training images, for several N
and seeds, under one compute rule for both: the same number of optimizer steps of the same batch size whatever
N is (so small subsets are seen for many epochs, large ones for few), and evaluates on the full test set.

This module defines the sweep and summarises its results; ``vitlens.train.sweep`` trains it.
"""
from __future__ import annotations

import json
import statistics
from typing import Any, Sequence

SIZES = (1000, 2000, 5000, 10000, 30000, 60000)
SEEDS = (0, 1)
ARCHS = ("vit", "cnn")
# Small enough for a CPU: a ViT with patch 4 (7 x 7 tokens on 28 x 28), 206k parameters and 20 MFLOPs per image,
# and a ResNet with one basic block per stage, widths 8..64 and a 3x3/1 stem, 83k parameters and 14 MFLOPs.
# Every architecture field is pinned here, so a later change to the packaged configs does not change the sweep.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("fashion_vit", dict(embed_dim=64, depth=6, num_heads=4, mlp_dim=128, representation_size=None,
                                drop_path=0.0)),
    "cnn": ("fashion_cnn", dict(channels=[8, 16, 32, 64], layers=[1, 1, 1, 1])),
}
# The augmentation is pinned too, at what the committed sweep used. The ViT's packaged recipe later gained crops,
# random erasing and stochastic depth for its 40-epoch demo run; at 1,000 steps they only slow it (fashion_vit.yaml).
AUGMENT: dict[str, dict[str, Any]] = {
    "vit": dict(crop_padding=0, hflip=True, random_erasing=0.0, label_smoothing=0.1),
    "cnn": dict(crop_padding=2, hflip=True, random_erasing=0.0, label_smoothing=0.1),
}


def summarise(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per architecture: ``size``, ``mean`` and ``std`` (sample standard deviation over seeds, 0 for one seed) of
    the test accuracy, and ``n`` (seeds), sizes ascending."""
    out: dict[str, dict[str, list[float]]] = {}
    for arch in sorted({r["arch"] for r in records}):
        sizes = sorted({r["size"] for r in records if r["arch"] == arch})
        accs = [[r["test_acc"] for r in records if r["arch"] == arch and r["size"] == s] for s in sizes]
        out[arch] = dict(size=sizes, mean=[statistics.fmean(a) for a in accs],
                         std=[statistics.stdev(a) if len(a) > 1 else 0.0 for a in accs], n=[len(a) for a in accs])
    return out


def sweep_models() -> dict[str, dict[str, Any]]:
    """The sweep's model settings (:data:`MODELS`) as the results JSON records them."""
    return json.loads(json.dumps({k: dict(config=v[0], **v[1]) for k, v in MODELS.items()}))


def sweep_results(records: Sequence[dict[str, Any]], steps: int, batch_size: int) -> dict[str, Any]:
    """The results JSON of a sweep: its description, budget and models, the ``records`` (one per run) and their
    ``summary`` (see :func:`summarise`)."""
    return dict(description="Fashion-MNIST test accuracy against training-set size (first N training images), "
                            "ViT vs CNN, same optimizer steps and batch for every run",
                steps=steps, batch_size=batch_size, models=sweep_models(),
                records=list(records), summary=summarise(records))


def crossover(summary: dict[str, dict[str, list[float]]], a: str = "vit", b: str = "cnn") -> float | None:
    """The smallest swept size at which ``a``'s mean accuracy reaches ``b``'s, or None if it never does."""
    sa, sb = summary[a], summary[b]
    for size, acc_a in zip(sa["size"], sa["mean"]):
        if size in sb["size"] and acc_a >= sb["mean"][sb["size"].index(size)]:
            return float(size)
    return None
