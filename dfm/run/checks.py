"""Checking a config's schedules before anything is written."""
import math

import ml_collections

from dfm import losses, optim, parallel, transform
from dfm.models import training as classifier
from dfm.run.settings import TUPLE_FIELDS, has_settings


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
  if value not in choices:
    raise ValueError(f"config.{name}={value!r} is not one of {choices}.")


def _check_rounds(config: ml_collections.ConfigDict) -> None:
  """DFT+MFT: rounds and each phase's epochs positive; DFT and MFT share the dataset."""
  for field in ("rounds", "dft_epochs", "mft_epochs"):
    if config.dft_mft[field] < 1:
      raise ValueError(f"config.dft_mft.{field} must be a positive integer, "
                       f"got {config.dft_mft[field]}.")
  if config.dft.dataset != config.mft.dataset:
    raise ValueError(f"config.dft.dataset={config.dft.dataset!r} and config.mft.dataset="
                     f"{config.mft.dataset!r} differ; DFT+MFT fine-tunes both on one dataset.")
  for field in ("examples_per_class", "val_examples_per_class"):
    if config.dft.get(field, 0) != config.mft.get(field, 0):
      raise ValueError(f"config.dft.{field}={config.dft.get(field, 0)} and config.mft.{field}="
                       f"{config.mft.get(field, 0)} differ; DFT+MFT fits both phases on the "
                       "same labelled images: set both to one value.")


def _check_finite(section: ml_collections.ConfigDict, name: str) -> None:
  """Every number of the config (nested sections too) is finite: no NaN, no inf."""
  for field, value in section.items():
    if isinstance(value, ml_collections.ConfigDict):
      _check_finite(value, f"{name}.{field}")
    elif isinstance(value, float) and not math.isfinite(value):
      raise ValueError(f"{name}.{field}={value} must be a finite number.")


def _check_settings(config: ml_collections.ConfigDict, section: str) -> None:
  """``config.dft.lams``/``lrs``: distinct finite numbers (lam >= 0, lr > 0), and only
  where K settings can run: white-box DFT."""
  bounds = {"lams": ("lam", lambda v: v >= 0, ">= 0"), "lrs": ("lr", lambda v: v > 0, "> 0")}
  for field in TUPLE_FIELDS:
    values = tuple(config.dft.get(field, ()))
    name, fits, bound = bounds[field]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values):
      raise ValueError(f"config.dft.{field}={values} must be a tuple of finite numbers, e.g. "
                       f"--config.dft.{field}='(0.01,0.1)'.")
    if not all(fits(v) for v in values):
      raise ValueError(f"config.dft.{field}={values}: every {name} must be {bound}.")
    if len(set(map(float, values))) != len(values):
      raise ValueError(f"config.dft.{field}={values} repeats a value; list each {name} once.")
  if has_settings(config) and (section == "dft_mft" or "black_box" in config):
    method = "DFT+MFT" if section == "dft_mft" else "query-only DFT"
    raise ValueError(f"config.dft.lams/lrs train K settings at once, which only white-box DFT "
                     f"(experiments.dft) does; {method} runs one: set config.dft.lam and lr "
                     "and leave lams and lrs empty.")


def check_schedule(config: ml_collections.ConfigDict, section: str) -> None:
  """Checks ``config.<section>`` (``train``, ``mft``, ``dft``, ``dft_mft``, ``probe``) before
  anything is written.

  Sizes and counts must be positive, choices known, and the checkpoint and log
  cadences (in steps) whole batches: a DFT batch serves ``updates_per_batch``
  steps, and checkpoints are taken between batches. ``dft_mft`` checks its rounds
  and the ``dft`` and ``mft`` sections it runs. ``dft.lams``/``dft.lrs`` (K settings,
  :mod:`dfm.run.settings`) hold distinct finite values, and only for white-box DFT.

  Raises:
    ValueError: naming the field and what it must be.
  """
  if section == "dft_mft":
    check_schedule(config, "dft")
    check_schedule(config, "mft")
    _check_rounds(config)
    _check_settings(config, section)
    return
  _check_finite(config, "config")
  if section not in config:
    raise ValueError(f"The config has no {section!r} section, which this method runs: add "
                     f"config.{section} (configs/common.py has the defaults).")
  schedule = config[section]
  for field in ("examples_per_class", "val_examples_per_class"):
    if schedule.get(field, 0) < 0:
      raise ValueError(f"config.{section}.{field}={schedule[field]} must be >= 0: k labelled "
                       "examples per class, or 0 for the whole split.")
  if config.get("eval_batch_size", 1) < 1:
    raise ValueError(f"config.eval_batch_size must be a positive integer, got "
                     f"{config.eval_batch_size}.")
  if section == "dft" and not schedule.lam >= 0:
    raise ValueError(f"config.dft.lam={schedule.lam} must be >= 0: it weighs the appearance "
                     "term ||X - Z||^2, which a negative lam would reward.")
  for field in ("batch_size", "epochs", *(("updates_per_batch",) if section == "dft" else ())):
    if schedule[field] < 1:
      raise ValueError(f"config.{section}.{field} must be a positive integer, got {schedule[field]}.")
  if not schedule.lr > 0:
    raise ValueError(f"config.{section}.lr must be positive, got {schedule.lr}.")
  _check_choice(f"{section}.optimizer", schedule.optimizer, optim.OPTIMIZERS)
  steps_per_batch = schedule.get("updates_per_batch", 1)
  for field in ("checkpoint_every", "log_every"):
    if config[field] < 1 or config[field] % steps_per_batch:
      raise ValueError(
          f"config.{field}={config[field]} must be a positive multiple of "
          f"config.{section}.updates_per_batch={steps_per_batch} (whole batches).")
  if section == "mft":
    _check_choice("mft.layers", schedule.layers, classifier.MFT_LAYERS)
  if section == "dft":
    _check_settings(config, section)
    _check_choice("dft.transform", schedule.transform, tuple(transform.TRANSFORMS))
    _check_choice("dft.class_term", schedule.class_term, tuple(losses.CLASS_TERMS))
    _check_choice("dft.parallel", schedule.parallel, parallel.PARALLEL_MODES)
    _check_choice("dft.lr_schedule", schedule.lr_schedule, optim.LR_SCHEDULES)
