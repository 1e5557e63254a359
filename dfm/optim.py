"""Optimizers named in configs, built from optax factories."""
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "sgd", "adamw")
LR_SCHEDULES = ("constant", "cosine")


def make_optimizer(
    name: str, learning_rate: float, *, schedule: str = "constant", total_steps: int = 1
) -> optax.GradientTransformation:
  """``optax.<name>`` with a constant or cosine-decayed learning rate.

  ``cosine``: ``lr_t = lr * 0.5 * (1 + cos(pi * t / total_steps))``, from ``lr`` at
  step 0 down to 0 at ``total_steps``.

  Example::

    make_optimizer("adam", 1e-3)  # the paper's optimizer for DFT
    make_optimizer("adam", 3e-2, schedule="cosine", total_steps=160)
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
  if schedule not in LR_SCHEDULES:
    raise ValueError(f"Unknown learning-rate schedule {schedule!r}; choose one of {LR_SCHEDULES}.")
  if schedule == "cosine":
    learning_rate = optax.cosine_decay_schedule(learning_rate, decay_steps=total_steps)
  return getattr(optax, name)(learning_rate)


def clocked_optimizer(name: str, learning_rate: float) -> optax.GradientTransformation:
  """``optax.<name>`` whose learning rate lives in its state, set from outside each
  step by :func:`set_learning_rate` (a query budget's clock).

  Example::

    optimizer = clocked_optimizer("adam", 0.1)
    opt_state = set_learning_rate(optimizer.init(noise), 0.05)
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS}.")
  return optax.inject_hyperparams(getattr(optax, name))(learning_rate=learning_rate)


def set_learning_rate(opt_state: optax.OptState, learning_rate: float) -> optax.OptState:
  """``opt_state`` of :func:`clocked_optimizer` with its learning rate replaced."""
  hyperparams = {**opt_state.hyperparams,
                 "learning_rate": jnp.asarray(learning_rate, jnp.float32)}
  return opt_state._replace(hyperparams=hyperparams)
