"""Figures of dhvtlib: `viz.attention` (head-token and class-token attention maps, captum attributions, the
head-token explorer widget) and `viz.figures` (the results' plots: style and palette, curves, paper vs reproduced,
data efficiency, saving, figure captions).

`from dhvtlib import viz` gives every public name of both, e.g. `viz.plot_head_tokens(...)`, `viz.plot_curves(...)`.
"""
from .attention import (ATTRIBUTION_METHODS, attributions, block_name, class_token_attention, head_token_attention,
                        head_token_explorer, image_label, overlay, plot_attributions, plot_class_attention,
                        plot_explorer, plot_head_tokens)
from .figures import PALETTE, figure_caption, plot_curves, plot_efficiency, plot_paper_vs_ours, save_figure, set_style

__all__ = ["head_token_attention", "class_token_attention", "overlay", "plot_head_tokens", "plot_class_attention",
           "attributions", "plot_attributions", "block_name", "image_label", "plot_explorer", "head_token_explorer",
           "ATTRIBUTION_METHODS", "PALETTE", "set_style", "save_figure", "plot_curves", "plot_paper_vs_ours",
           "plot_efficiency", "figure_caption"]
