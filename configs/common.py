"""Pieces shared by the config files: argument parsing, model presets, defaults."""
import ml_collections

# Conv widths per block (each block ends in a 2x2 max-pool) and dense NNET widths.
MODEL_PRESETS = {
    # Seconds-long smoke runs and tests.
    "tiny": {"blocks": ((4,), (8,)), "dense": (16, 16)},
    # Small enough for the CPU demo: 6 convolutions, the paper's NNET head.
    "vgg6": {"blocks": ((8, 8), (16, 16), (32, 32)), "dense": (512, 512)},
    # VGG-16's 13 convolutions in 5 blocks, the paper's NNET head.
    "vgg16": {
        "blocks": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
        "dense": (512, 512),
    },
}


def parse_arg(arg: str, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"name,flag,key=value"`` into a ConfigDict over ``defaults``.

  A bare word that is a boolean default (e.g. ``runlocal``) sets it True; any other
  bare word is the ``name``. ``key=value`` sets a default's key (booleans from
  ``true``/``false``).

  Example::

    parse_arg("mnist5k,runlocal", name="", runlocal=False)  # name=mnist5k, runlocal=True
  """
  parsed = ml_collections.ConfigDict(defaults)
  for token in filter(None, arg.split(",")):
    key, sep, value = token.partition("=")
    if sep and key not in defaults:
      raise ValueError(f"Unknown config argument {key!r}; valid: {sorted(defaults)}.")
    if sep and isinstance(defaults[key], bool):
      parsed[key] = {"true": True, "false": False}[value.lower()]
    elif sep:
      parsed[key] = type(defaults[key])(value)
    elif isinstance(defaults.get(key), bool):
      parsed[key] = True
    else:
      parsed.name = key
  return parsed


def unknown_name(name: str, valid: list[str] | tuple[str, ...]) -> ValueError:
  """The error for a config name that names no experiment (or none at all)."""
  if not name:
    return ValueError(f"This config file needs a name: --config=FILE:NAME with NAME one of "
                      f"{list(valid)}.")
  return ValueError(f"Unknown config {name!r}; use one of {list(valid)}.")


def model_config(preset: str, *, num_classes: int, input_shape: tuple[int, ...]) -> ml_collections.ConfigDict:
  """``config.model`` for a preset of ``MODEL_PRESETS``."""
  return ml_collections.ConfigDict({
      "preset": preset, **MODEL_PRESETS[preset],
      "num_classes": num_classes, "input_shape": input_shape,
  })


def classifier_training(dataset: str) -> ml_collections.ConfigDict:
  """``config.train``: the paper trains its classifier 20 epochs with Adam, lr 0.005."""
  return ml_collections.ConfigDict({
      "dataset": dataset, "optimizer": "adam", "lr": 0.005, "epochs": 20, "batch_size": 128,
  })


# Of every fine-tuning section (dft, mft, probe): k labelled examples per class of the
# target's train and validation splits (0: the whole split), the same images for every
# method of a seed (dfm.data.subsets; experiments.label_curve varies them).
FEW_LABELS = {"examples_per_class": 0, "val_examples_per_class": 0}


def linear_probe(dataset: str, batch_size: int) -> ml_collections.ConfigDict:
  """``config.probe``: a new linear output layer on the frozen classifier's penultimate
  features (the standard transfer baseline), from zeros, Adam at lr 0.01 for 20 epochs."""
  return ml_collections.ConfigDict({
      "dataset": dataset, "optimizer": "adam", "lr": 0.01, "epochs": 20,
      "batch_size": batch_size, **FEW_LABELS})


def dft_schedule(dataset: str) -> ml_collections.ConfigDict:
  """``config.dft``: the paper's schedule (batch 800, 16 updates a batch, 5 epochs, Adam
  lr 1e-3, lam 1), the exact tanh transform and the true-class hinge. Tuples in
  ``lams``/``lrs`` train every (lam, lr) of them at once (:mod:`dfm.run.settings`)."""
  return ml_collections.ConfigDict({
      "dataset": dataset,
      "optimizer": "adam", "lr": 1e-3, "lr_schedule": "constant", "lam": 1.0,
      "lams": (), "lrs": (),  # () = the scalar lam / lr; a tuple: K settings in one run.
      "batch_size": 800, "updates_per_batch": 16, "epochs": 5,
      "transform": "tanh", "class_term": "hinge",
      "noise_shape": (),  # () = the image's shape; or a coarser (h, w, C).
      "parallel": "auto",  # auto | single | sharded | pmap
      **FEW_LABELS,
  })


def run_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields every run has: seed, data, logging cadence (in steps), and whether the
  report draws its PNG figures (``--config.figures=False`` for large sweeps: report.md
  keeps its tables, metrics.json every number; a run resumes either way)."""
  config.seed = 0
  config.data_dir = "data"
  config.eval_batch_size = 800
  config.log_every = 16
  config.checkpoint_every = 32
  config.figures = True
  return config
