"""Training and evaluation data: Fashion-MNIST from IDX files, CIFAR, image folders, timm readers, synthetic."""
from .datasets import DATASET_STATS, SMALL_DATASETS, SyntheticDataset, build_dataset, build_transform, num_classes_of
from .fashion_mnist import FashionMNIST, read_idx

__all__ = ["DATASET_STATS", "FashionMNIST", "SMALL_DATASETS", "SyntheticDataset", "build_dataset",
           "build_transform", "num_classes_of", "read_idx"]
