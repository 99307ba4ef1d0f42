"""The title claim, tested: does a plain ViT fall further behind a CNN as data shrinks, and does DHVT close the gap?

The study's design (`design.py`), its runs (`runs.py`: the plan, training, what is left, `python -m dhvtlib.study`) and
its pre-registered verdicts (`stats.py`); every public name is importable from `dhvtlib.study` (README "The title claim"):

- **Models** (`MODELS`): DeiT (absolute position embedding) and DHVT at the ladder's small width (embed 64, depth 4,
  4 heads, patch 4), and the small-image ResNet-18 at the base width whose parameter count is closest to that
  DHVT's, (a) on the same ViT recipe (`resnet`) and (b) on the standard CNN recipe (`resnet_sgd`, preset
  `cnn_sgd`), the reference CNN for the gap.
- **Sizes** (`SIZES`): 10, 30, 100, 300 and 1000 training images per class; `seeds_for(n)` seeds each (5 at 10 and
  30, 3 above). A seed picks the subset and the initialisation, paired across models. Test: a fixed stratified half
  of the test set (500 per class, the same for every run).
- **Budget** (`budget`): the same schedule shape at every size: max(16,000 updates, 100 epochs) at batch 64 (the
  update floor `min_steps` x `GRID_SCALE`), warmup 10% of them, one cosine over all of them, stepped per update
  (`sched_unit="step"`: with 1-4 updates per epoch at the small sizes, a per-epoch schedule would be a staircase
  of a few steps). Evaluation every k epochs (about every 500 updates, at most 20 times, always at the end), so
  it costs a few % of training.
- **Convergence** (`convergence_runs`): one seed at 30 and 1000 per class with 2x the budget; the budget is
  accepted when the last-epoch top-1 moves by less than `CONVERGENCE_POINTS`, else doubled. The first budget
  (max(2000 updates, 50 epochs)) failed at 30 per class three times (DeiT, seed 0: 65.38 -> 71.14 at 4000
  updates, -> 73.50 at 8000, -> 77.76 at 16,000), so the update floor is 8x 2000 (`GRID_SCALE`). The epoch floor
  no longer doubles with it (no check where it binds has failed) and is 100 epochs. The update floor is capped
  here (cost): a model whose check at 30 per class fails is reported as not converged at 16,000 updates. If a
  check at 1000 per class fails, every model's grid there moves to the check's budget (`GRID_SCALE_AT`, one
  doubling, not checked again): `doubling_rule` holds that size's later seeds back until its checks have completed,
  and refuses to train on while a failed check asks for `GRID_SCALE_AT` to be set.
- **Tags** carry the absolute scale, `<model>/<n>pc/scale<k>` (and `.../scale<k>/fp32`), so a doubling changes no
  record: `variant(tag)` names a run relative to the grid ('' for `GRID_SCALE`, 'x2' for twice it, 'half',
  'quarter', 'eighth' for the smaller budgets already run, 'fp32').
- **Precision** (`precision_runs`): bf16 (what `precision="auto"` picks on a CPU with native bf16) against fp32 for
  one configuration at 3 seeds (tags `.../fp32`).
- **Verdicts** (`verdicts`), with x = log10(images per class) and gap = top1(CNN-SGD) - top1(DeiT) paired by seed:
  claim 1 holds if the least-squares slope of the per-size mean gap against x is negative and its 95% bootstrap CI
  (resampling seeds within each size) excludes 0; claim 2 holds at a size if the 95% CI of top1(DHVT) -
  top1(CNN-SGD) (paired, bootstrap) reaches -1 point or above; the share of the gap DHVT closes, (DHVT - DeiT) /
  (CNN-SGD - DeiT), is reported with its CI wherever the gap is positive.
"""
from .design import (BATCH, CNN_REFERENCE, CONVERGENCE_POINTS, CONVERGENCE_SIZES, DOUBLING_SIZES, GRID_SCALE,
                     GRID_SCALE_AT, LABELS, MODELS, PRECISION_CHECK, RELATIVE, SIZES, VIT, Budget, budget, grid_scale,
                     seeds_for, variant)
from .runs import (convergence_runs, doubling_rule, efficiency_runs, late, main, precision_runs, progress_line,
                   remaining, run_study, study_order, study_plan)
from .stats import (convergence_table, grid_checks, not_converged, paired_ci, precision_table, run_config,
                    slope_ci, study_frame, summary_table, verdicts)

__all__ = ["SIZES", "MODELS", "CNN_REFERENCE", "CONVERGENCE_SIZES", "CONVERGENCE_POINTS", "DOUBLING_SIZES", "LABELS",
           "GRID_SCALE", "GRID_SCALE_AT", "grid_scale", "RELATIVE", "PRECISION_CHECK", "VIT", "BATCH", "Budget",
           "budget", "seeds_for", "variant", "efficiency_runs", "convergence_runs", "precision_runs", "study_plan",
           "run_study", "late", "study_order", "doubling_rule", "remaining", "progress_line", "main", "study_frame",
           "summary_table", "convergence_table", "grid_checks", "not_converged", "precision_table", "slope_ci",
           "paired_ci", "verdicts", "run_config"]
