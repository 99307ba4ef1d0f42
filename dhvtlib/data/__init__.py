"""Data sets (registry, loaders, per-class subsets), DomainNet preparation and batch augmentation."""
# types: DatasetInfo, InMemoryImages, FolderError (data/types.py), shared by every module below
from .types import DatasetInfo, FolderError, InMemoryImages
from .datasets import (DATASETS, DOMAINNET_DOMAINS, dataset_info, default_data_dir, fetch_fashion_mnist, load_split,
                       read_idx, samples_per_class_indices, subset_per_class)
# augment: BatchAugment, normalize_batch, build_pil_transform (data/augment/)
from .augment import BatchAugment, build_pil_transform, normalize_batch
# your own image folder, checked, split and decoded once (data/folder.py; data/scan.py, data/decode.py)
from .decode import load_image
from .folder import own_data, own_image_size
from .scan import scan_folder

__all__ = ["DATASETS", "DOMAINNET_DOMAINS", "DatasetInfo", "InMemoryImages", "dataset_info", "default_data_dir",
           "fetch_fashion_mnist", "load_split", "read_idx", "samples_per_class_indices", "subset_per_class",
           "BatchAugment", "build_pil_transform", "normalize_batch", "FolderError", "load_image", "own_data",
           "own_image_size", "scan_folder"]
