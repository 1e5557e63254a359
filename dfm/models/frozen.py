"""The frozen classifier of a finished training run, loaded and checked against the config."""
from pathlib import Path
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from dfm.models.build import build_classifier, make_apply_fn, param_shapes
from dfm.types import ApplyFn


def shape_mismatches(found: Any, expected: Any) -> list[str]:
  """One line per leaf absent from either tree or of another shape, e.g.
  ``"['Dense_0']['kernel']: checkpoint (64, 10) vs config (64, 2)"``."""
  found_leaves = dict(jax.tree_util.tree_leaves_with_path(found))
  expected_leaves = dict(jax.tree_util.tree_leaves_with_path(expected))
  problems = []
  for path in sorted(set(found_leaves) | set(expected_leaves), key=str):
    name = jax.tree_util.keystr(path)
    a, b = found_leaves.get(path), expected_leaves.get(path)
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
      shape_a = "absent" if a is None else tuple(a.shape)
      shape_b = "absent" if b is None else tuple(b.shape)
      problems.append(f"{name}: checkpoint {shape_a} vs config {shape_b}")
  return problems


def _restore_here(path: Path) -> Any:
  """The checkpointed tree at ``path`` on this process's first device, however many
  devices and processes saved it (each host of a multi-host run loads its own copy)."""
  here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=here),
                        ocp.StandardCheckpointHandler().metadata(path).tree)
  return ocp.StandardCheckpointer().restore(path, target)


def load_frozen_params(directory: Path, expected: Any) -> Any:
  """Loads the latest classifier params saved under ``directory`` onto the device.

  The params are placed once (on the default device) and then passed to every
  step and evaluation, so no step copies the model from the host again.

  Args:
    directory: a classifier run's ``checkpoints`` folder.
    expected: the params tree the config's model has (e.g. from
      :func:`dfm.models.param_shapes`); every leaf's shape is checked against it.

  Raises:
    ValueError: no checkpoint there, or a checkpoint that does not fit the config.
  """
  directory = Path(directory).absolute()
  step = ocp.CheckpointManager(directory).latest_step() if directory.is_dir() else None
  if step is None:
    raise ValueError(
        f"No classifier checkpoint in {directory}. Train one first with "
        "`python -m experiments.train_classifier --config=... --workdir=DIR` and pass "
        "--config.classifier_dir=DIR.")
  restored = _restore_here(directory / str(step) / "state")
  if "params" not in restored:
    raise ValueError(
        f"The checkpoint in {directory} holds no classifier params (keys: {sorted(restored)}): "
        "pass the workdir of an experiments.train_classifier run.")
  params = restored["params"]
  problems = shape_mismatches(params, expected)
  if problems:
    raise ValueError(
        f"The classifier checkpoint in {directory} does not fit config.model: "
        + "; ".join(problems[:5])
        + ". Use the config the classifier was trained with (its config.json).")
  return jax.device_put(params)


def load_frozen_vgg(config: ml_collections.ConfigDict) -> tuple[ApplyFn, Any]:
  """``(apply_fn, params)`` of dfm's VGG saved under ``config.classifier_dir``.

  The checkpoint is checked against ``config.model``: every parameter's shape.
  The classifier must have finished training (its run wrote ``metrics.json``).
  """
  classifier_dir = Path(config.classifier_dir).absolute()
  if not (classifier_dir / "metrics.json").is_file():
    raise ValueError(
        f"{classifier_dir} holds no finished classifier run (no metrics.json). Train one "
        "with `python -m experiments.train_classifier --config=... --workdir=DIR` (the "
        "same command resumes an interrupted one) and pass --config.classifier_dir=DIR.")
  module = build_classifier(config.model)
  expected = param_shapes(module, tuple(config.model.input_shape))
  params = load_frozen_params(classifier_dir / "checkpoints", expected)
  print(f"Frozen classifier: {classifier_dir} (config.classifier_dir).", flush=True)
  return make_apply_fn(module), params
