"""`python -m dhvtlib.evaluate --checkpoint ... --dataset ...` (the same as `dhvt-eval`; works under torchrun)."""
from .train import eval_main

if __name__ == "__main__":
    eval_main()
