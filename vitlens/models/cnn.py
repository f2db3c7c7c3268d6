"""CNN baselines from timm, adapted to small inputs, with the same save/load path as the ViT."""
from __future__ import annotations

from typing import Any

import timm
from torch import nn


def create_cnn(name: str = "resnet18", *, in_chans: int = 3, num_classes: int = 1000, img_size: int = 224,
               small_input: bool = False, **kwargs: Any) -> nn.Module:
    """A timm CNN with random weights, carrying ``vitlens_spec`` (to rebuild it) and ``data_config``.

    Args:
        name: a timm architecture (``resnet18``, ``resnet50``, ``resnetv2_50x1_bit``...).
        in_chans: image channels.
        num_classes: classifier outputs.
        img_size: the input size it is trained at (recorded in ``data_config``).
        small_input: replace the 7x7/2 stem and max-pool by a 3x3/1 conv (the usual CIFAR/MNIST change),
            so a 28 x 28 image keeps a 4 x 4 map before pooling instead of 1 x 1.
        **kwargs: passed to ``timm.create_model``.
    """
    model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)
    if small_input:
        if not (hasattr(model, "conv1") and hasattr(model, "maxpool")):
            raise ValueError(f"small_input needs a timm ResNet with conv1/maxpool; {name} has neither")
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.vitlens_spec = dict(name=name, in_chans=in_chans, num_classes=num_classes, img_size=img_size,
                              small_input=small_input, **kwargs)
    model.data_config = dict(input_size=(in_chans, img_size, img_size), mean=(0.5,) * in_chans,
                             std=(0.5,) * in_chans, interpolation="bilinear", crop_pct=1.0)
    return model
