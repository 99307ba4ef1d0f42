"""One training run, one owner per question:

| question | file |
| --- | --- |
| what a recipe builds (model, data, optimiser and lr schedule, loss, virtual GPUs, compile) | build.py |
| the loop over one epoch's batches, and evaluation (torch only) | loop.py |
| what a checkpoint holds, when it is written, and the write itself | state.py |
| which device and precision a run uses (and keeps when resumed), seeds, the versions/hardware record | runtime.py |
| the run directory: lock, manifest and metrics files, stop signals, what a resume may change | rundir.py |
| what a person sees while it trains (progress bars, the one-line interruption) | progress.py |
| the orchestration: recipe -> build -> epochs -> records, and the dhvt-train command line | train.py |

Where the lr is scaled: `Recipe.effective_lr` (dhvtlib/recipe.py), used by `build.build_optimizer`.
"""
from .train import main, run

__all__ = ["run", "main"]
