"""Figures of dhvtlib: `viz.attention` (head-token and class-token attention maps, captum attributions, the
head-token explorer widget).

`from dhvtlib import viz` gives every public name of its modules, e.g. `viz.plot_head_tokens(...)`.
"""
from .attention import (ATTRIBUTION_METHODS, attributions, block_name, class_token_attention, head_token_attention,
                        head_token_explorer, image_label, overlay, plot_attributions, plot_class_attention,
                        plot_explorer, plot_head_tokens)

__all__ = ["head_token_attention", "class_token_attention", "overlay", "plot_head_tokens", "plot_class_attention",
           "attributions", "plot_attributions", "block_name", "image_label", "plot_explorer", "head_token_explorer",
           "ATTRIBUTION_METHODS"]
