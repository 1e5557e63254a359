"""Optimizers named in configs, built from optax factories."""
import optax

OPTIMIZERS = ("adam", "sgd", "adamw")


def make_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
  """``optax.<name>(learning_rate)`` for a name in ``OPTIMIZERS``.

  Example::

    make_optimizer("adam", 1e-3)  # the paper's optimizer for DFT
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
  return getattr(optax, name)(learning_rate)
