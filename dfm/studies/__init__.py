"""Studies over many runs: the paper's comparison over seeds, and hyperparameter sweeps.

Each orchestrates the methods of :mod:`dfm.run` (finished runs are skipped,
interrupted ones resume) and writes its tables; ``experiments/compare.py`` and
``experiments/sweep.py`` are their command lines.
"""
