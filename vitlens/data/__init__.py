"""Training and evaluation data: Fashion-MNIST from IDX files, CIFAR, image folders, timm readers, synthetic; and
class names for a model's outputs."""
from .datasets import (DATASET_STATS, SMALL_DATASETS, SyntheticDataset, build_dataset, build_transform,
                       check_data_dir, num_classes_of)
from .fashion_mnist import FashionMNIST, load_tensors, read_idx
from .labels import class_names, imagenet_names, knows_only_fashion_mnist

__all__ = ["DATASET_STATS", "FashionMNIST", "SMALL_DATASETS", "SyntheticDataset", "build_dataset",
           "build_transform", "check_data_dir", "class_names", "imagenet_names", "knows_only_fashion_mnist",
           "load_tensors", "num_classes_of", "read_idx"]
