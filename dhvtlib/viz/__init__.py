"""Figures of dhvtlib: `viz.attention` (head-token and class-token attention maps, captum attributions, the
head-token explorer widget) and `viz.figures` (the results' plots: style and palette, curves, paper vs reproduced,
data efficiency, saving, figure captions).

`from dhvtlib import viz` gives every public name of both, e.g. `viz.plot_head_tokens(...)`, `viz.plot_curves(...)`.
"""
from . import attention, figures
from .attention import *  # noqa: F403 (the names in attention.__all__)
from .figures import *  # noqa: F403 (the names in figures.__all__)

__all__ = [*attention.__all__, *figures.__all__]
