"""Experiment configs: ``get_config(arg)`` files for ``--config=configs/FILE.py:ARG``."""
