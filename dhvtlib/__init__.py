"""dhvtlib: a reference reproduction suite for DHVT (Lu et al., NeurIPS 2022).

`import dhvtlib` registers the DHVT variants and DeiT baselines in timm.
"""
from .models import DHVT, VARIANTS, create_model, list_models, param_groups_weight_decay

__version__ = "0.1.0"
__all__ = ["DHVT", "VARIANTS", "create_model", "list_models", "param_groups_weight_decay", "__version__"]
