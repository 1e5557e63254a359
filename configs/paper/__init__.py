"""Configs of the paper's experiments: one ``get_config(arg)`` per table row."""
