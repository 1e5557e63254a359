"""The white-box methods, each a ``run(config, workdir) -> metrics`` that entrypoints launch.

- :func:`train_classifier`: trains the classifier that DFT later freezes;
- :func:`dft`: data fine-tuning, one noise learned with the classifier frozen (or K
  noises of K settings at once, :func:`dft_settings`);
- :func:`mft`: model fine-tuning, the paper's baseline where weights may change;
- :func:`dft_mft`: the paper's alternation of DFT and MFT rounds;
- :func:`probe`: the linear probe, a new output layer on the frozen features.

Each checks everything (config, classifier, data) before claiming the workdir,
resumes from its checkpoints when started again, and writes ``metrics.json``.

Example::

  results = dft(config, "runs/dft")   # as python -m experiments.dft does
"""
import json
from typing import Any

import ml_collections

from dfm import data, models
from dfm.run.checks import check_schedule
from dfm.run.evaluate import evaluate_split, make_eval_step
from dfm.run.phases import fit_noise, fit_noises, fit_weights, noise_shape
from dfm.run.results import write_results
from dfm.run.settings import has_settings, setting_records, settings_of
from dfm.run.workdir import claim_workdir, write_json
from dfm.types import ApplyFn

# DFT+MFT round r shuffles with seed ``config.seed + ROUND_SEED_STRIDE * r``.
ROUND_SEED_STRIDE = 1000


def method_splits(config: ml_collections.ConfigDict, section: str) -> dict[str, Any]:
  """The splits of ``config.<section>.dataset``, train and validation cut to the
  section's ``examples_per_class`` / ``val_examples_per_class`` (0: whole; seeded by
  ``config.seed``, the same images for every method of a seed: :mod:`dfm.data.subsets`)."""
  schedule = config[section]
  sources = data.open_splits(schedule.dataset, config.data_dir, config.model.input_shape)
  return data.schedule_labels(schedule, sources, config.seed)


def train_classifier(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains ``config.model`` on ``config.train.dataset``; returns val/test accuracy."""
  check_schedule(config, "train")
  sources = data.open_splits(config.train.dataset, config.data_dir, config.model.input_shape)
  workdir = claim_workdir(workdir, config)
  module = models.build_classifier(config.model)
  apply_fn = models.make_apply_fn(module)
  initial = models.init_params(module, tuple(config.model.input_shape), config.seed)
  params = fit_weights(config, config.train, apply_fn, initial, sources, workdir)
  eval_step = make_eval_step(apply_fn)
  results = {"dataset": config.train.dataset, "num_params": models.count_params(params)}
  for split in ("validation", "test"):
    results[split] = evaluate_split(eval_step, params, None, sources[split], config)
  write_json(workdir / "metrics.json", results)
  print(f"Classifier on {config.train.dataset}: val accuracy "
        f"{100 * results['validation']['accuracy']:.1f}%, test "
        f"{100 * results['test']['accuracy']:.1f}%. Checkpoint: {workdir / 'checkpoints'}")
  return results


def dft(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the noise, evaluates before/after, writes the outputs; returns metrics.

  With tuples in ``config.dft.lams``/``lrs`` it trains their K settings at once
  (:func:`dft_settings`).
  """
  check_schedule(config, "dft")
  apply_fn, params = models.load_frozen_classifier(config)
  sources = method_splits(config, "dft")
  noise_shape(config)
  if has_settings(config):
    return dft_settings(config, workdir, apply_fn, params, sources)
  workdir = claim_workdir(workdir, config)
  noise = fit_noise(config, config.dft, apply_fn, params, sources, workdir)
  return write_results(workdir, config, method="dft", dataset=config.dft.dataset,
                       eval_step=make_eval_step(apply_fn, transform=config.dft.transform),
                       transform=config.dft.transform, before=(params, None),
                       after=(params, noise), sources=sources)


def dft_settings(config: ml_collections.ConfigDict, workdir: str, apply_fn: ApplyFn,
                 params: Any, sources: dict[str, Any]) -> dict[str, Any]:
  """DFT of the K settings of ``config.dft.lams`` x ``lrs`` in one run (one pass of
  the data, one checkpoint: :func:`dfm.run.phases.fit_noises`).

  ``workdir`` holds the K run's ``config.json``, ``checkpoints/``, ``metrics.jsonl``
  and a ``metrics.json`` index (no ``method``: not a run of its own); each setting's
  folder (:mod:`dfm.run.settings`) holds what its separate run would write except
  the checkpoints: ``config.json`` with its scalar lam and lr, ``metrics.jsonl``,
  ``metrics.json``, ``noise.npy``, ``noise.png``, ``report.md``. Every folder is
  claimed before training. Returns ``{"settings": {folder: summary}}``.
  """
  root = claim_workdir(workdir, config)
  settings = settings_of(config)
  folders = [claim_workdir(str(root / setting.name), setting.config) for setting in settings]
  noises, records = fit_noises(config, [(s.lam, s.lr) for s in settings], apply_fn, params,
                               sources, root)
  eval_step, index = make_eval_step(apply_fn, transform=config.dft.transform), {}
  for k, (setting, folder) in enumerate(zip(settings, folders)):
    (folder / "metrics.jsonl").write_text(
        "".join(json.dumps(record) + "\n" for record in setting_records(records, k)))
    results = write_results(folder, setting.config, method="dft", dataset=config.dft.dataset,
                            eval_step=eval_step, transform=config.dft.transform,
                            before=(params, None), after=(params, noises[k]), sources=sources)
    index[setting.name] = {"k": k, "lam": setting.lam, "lr": setting.lr,
                           "val_accuracy": results["val"]["after"]["accuracy"],
                           "test_accuracy": results["after"]["accuracy"]}
  write_json(root / "metrics.json", {"settings": index})
  return {"settings": index}


def mft(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Fine-tunes the weights, evaluates before/after, writes the outputs; returns metrics."""
  check_schedule(config, "mft")
  apply_fn, params = models.load_frozen_classifier(config)
  sources = method_splits(config, "mft")
  workdir = claim_workdir(workdir, config)
  tuned = fit_weights(config, config.mft, apply_fn, params, sources, workdir)
  return write_results(workdir, config, method="mft", dataset=config.mft.dataset,
                       eval_step=make_eval_step(apply_fn, transform=config.dft.transform),
                       transform=config.dft.transform, before=(params, None),
                       after=(tuned, None), sources=sources)


def probe(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """The linear probe: a new output layer (:func:`dfm.models.reset_output_layer`, from
  zeros) trained alone on the frozen classifier's penultimate features,
  ``softmax(W f(x) + b)``; evaluates before/after, writes the outputs; returns metrics."""
  check_schedule(config, "probe")
  apply_fn, params = models.load_frozen_classifier(config)
  sources = method_splits(config, "probe")
  workdir = claim_workdir(workdir, config)
  schedule = ml_collections.ConfigDict({**config.probe.to_dict(), "layers": "output"})
  initial = models.reset_output_layer(params, config.model.num_classes)
  tuned = fit_weights(config, schedule, apply_fn, initial, sources, workdir)
  return write_results(workdir, config, method="probe", dataset=config.probe.dataset,
                       eval_step=make_eval_step(apply_fn), transform=config.dft.transform,
                       before=(params, None), after=(tuned, None), sources=sources)


def _with_epochs(schedule: ml_collections.ConfigDict, epochs: int) -> ml_collections.ConfigDict:
  phase = ml_collections.ConfigDict(schedule.to_dict())
  phase.epochs = epochs
  return phase


def dft_mft(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Alternates rounds of DFT (weights fixed) and MFT (noise fixed); each round starts
  from both, with a fresh optimizer and its own shuffle order. Returns metrics."""
  check_schedule(config, "dft_mft")
  apply_fn, frozen = models.load_frozen_classifier(config)
  sources = method_splits(config, "dft")  # The DFT's labels serve both phases.
  noise_shape(config)
  workdir = claim_workdir(workdir, config)
  dft_phase = _with_epochs(config.dft, config.dft_mft.dft_epochs)
  mft_phase = _with_epochs(config.mft, config.dft_mft.mft_epochs)
  params, noise = frozen, None
  for round_index in range(config.dft_mft.rounds):
    round_dir = workdir / f"round{round_index}"
    print(f"DFT+MFT round {round_index + 1}/{config.dft_mft.rounds}: DFT", flush=True)
    data_seed = config.seed + ROUND_SEED_STRIDE * round_index
    noise = fit_noise(config, dft_phase, apply_fn, params, sources, round_dir / "dft",
                      noise=noise, data_seed=data_seed)
    print(f"DFT+MFT round {round_index + 1}/{config.dft_mft.rounds}: MFT", flush=True)
    params = fit_weights(config, mft_phase, apply_fn, params, sources, round_dir / "mft",
                         noise=noise, transform=config.dft.transform, data_seed=data_seed)
  return write_results(workdir, config, method="dft_mft", dataset=config.dft.dataset,
                       eval_step=make_eval_step(apply_fn, transform=config.dft.transform),
                       transform=config.dft.transform, before=(frozen, None),
                       after=(params, noise), sources=sources)


METHODS = {"train_classifier": train_classifier, "dft": dft, "mft": mft, "dft_mft": dft_mft,
           "probe": probe}
