"""python -m dhvtlib.run --preset quick --output runs/quick (the dhvt-train command)."""
from .train import main

main()
