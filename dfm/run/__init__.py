"""Running a method end to end: config checks, workdir, checkpoints, the resumable
loop and phases, evaluation and results.

The methods (:mod:`dfm.run.methods`, :mod:`dfm.run.query_dft`) are the
``run(config, workdir)`` functions that ``experiments/`` entrypoints launch.
"""
