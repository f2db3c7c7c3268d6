"""Class names for a model's outputs: Fashion-MNIST's for the bundled 10-class grayscale models, ImageNet's for
1000-class models (timm ships them: no download), numbers otherwise."""
from __future__ import annotations

import functools

from torch import nn

from .fashion_mnist import CLASSES as FASHION_MNIST_CLASSES


@functools.cache
def imagenet_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class descriptions, in timm's class order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return tuple(info.index_to_description(i) for i in range(1000))


def class_names(model: nn.Module) -> list[str]:
    """A name for each of the model's classes: Fashion-MNIST's for 10-class grayscale models (the bundled ones),
    ImageNet's for 1000 classes, ``class i`` otherwise."""
    n = model.num_classes
    if n == 10 and model.data_config["input_size"][0] == 1:
        return list(FASHION_MNIST_CLASSES)
    if n == 1000:
        return list(imagenet_names())
    return [f"class {i}" for i in range(n)]


def knows_only_fashion_mnist(model: nn.Module) -> bool:
    """Whether the model's classes are Fashion-MNIST's (a photo is then outside its domain)."""
    return class_names(model) == list(FASHION_MNIST_CLASSES)
