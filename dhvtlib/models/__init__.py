"""DHVT models: layers, the model and its variants (registered in timm), ablation rows, profiling."""
from .dhvt import (DHVT, IMAGENET_MEAN, IMAGENET_STD, VARIANTS, VariantCfg, convert_sope_sync_batchnorm, create_model,
                   fuse_batchnorm, list_models, param_groups_weight_decay)
from .layers import DAFF, SOPE, Affine, AllReduceSyncBatchNorm2d, Attention, Block, LinearPatchEmbed, Mlp, SplitBatchNorm2d

__all__ = ["DHVT", "VARIANTS", "VariantCfg", "convert_sope_sync_batchnorm", "create_model", "fuse_batchnorm", "list_models",
           "param_groups_weight_decay",
           "IMAGENET_MEAN", "IMAGENET_STD", "SOPE", "Affine", "Attention", "DAFF", "Block", "LinearPatchEmbed", "Mlp",
           "SplitBatchNorm2d", "AllReduceSyncBatchNorm2d"]
