"""python -m dhvtlib.study --output-dir DIR [--workers 2 --threads 1]"""
from .runs import main

main()
