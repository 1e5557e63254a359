"""Peak host memory of a DFT epoch and of an evaluation pass, against the dataset's size.

Training and evaluation stream from ArrayRecord through grain, a batch at a time:
what a run holds per example is a few scalars (a label, a row of class
probabilities), so its peak resident memory should not grow with the dataset.
:func:`measure` checks that on synthetic datasets of seeded random blobs (RGB
64x64, two classes: is the blob in the left half?), prepared once through the
``npz`` builder into ``data_dir/blobs_<N>`` (60/20/20 per class) and reused. Each
case runs in a fresh Python process, which reports its own peak resident set
(``VmHWM``):

- ``dft_epoch_mb``: one epoch of white-box DFT (:func:`dfm.run.phases.fit_noise`,
  ``updates_per_batch=1``, validation at its end) with the tiny classifier;
- ``evaluation_mb``: the end of a run (:func:`dfm.run.results.write_results`):
  validation and test scored before and after a noise, the report's SSIM and
  sample images, ``report.md``.

Example::

  measure("/tmp/dfm_memory", sizes=(10_000, 100_000))
  # {"10000": {"dft_epoch_mb": ..., "evaluation_mb": ...}, "100000": {...},
  #  "ratio_100000_to_10000": {"dft_epoch": ..., "evaluation": ...}}
"""
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import ml_collections
import numpy as np

from dfm import data, models
from dfm.run.evaluate import make_eval_step
from dfm.run.phases import fit_noise
from dfm.run.results import write_results

IMAGE_SIZE = 64
DATASET = f"npz/{IMAGE_SIZE}px_rgb"
CASES = ("dft_epoch", "evaluation")
_CHUNK = 2000  # Images generated at once: 2000 x 64 x 64 x 3 float32, about 100 MB.


def blob_images(count: int, seed: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
  """``count`` uint8 RGB images ``[count, size, size, 3]`` and their labels, from ``seed``.

  Each image is a Gaussian blob (random centre, width 3-10 px, colour) on a dark
  background with pixel noise; label 1 when the blob's centre is in the left half.

  >>> images, labels = blob_images(4, seed=0, size=8)
  >>> images.shape, images.dtype, labels.shape
  ((4, 8, 8, 3), dtype('uint8'), (4,))
  """
  rng = np.random.default_rng(seed)
  centres = rng.uniform(0, size, (count, 2)).astype(np.float32)
  widths = rng.uniform(3, 10, count).astype(np.float32)
  colours = rng.uniform(0.3, 1.0, (count, 3)).astype(np.float32)
  grid = np.arange(size, dtype=np.float32)
  images = np.empty((count, size, size, 3), np.uint8)
  for start in range(0, count, _CHUNK):
    part = slice(start, start + _CHUNK)
    rows = (grid[None, :] - centres[part, :1]) ** 2
    columns = (grid[None, :] - centres[part, 1:]) ** 2
    blob = np.exp(-(rows[:, :, None] + columns[:, None, :]) / (2 * widths[part, None, None] ** 2))
    pixels = 0.1 + 0.85 * blob[..., None] * colours[part, None, None, :]
    pixels += rng.normal(0, 0.02, pixels.shape).astype(np.float32)
    images[part] = np.round(255 * np.clip(pixels, 0, 1))
  return images, (centres[:, 1] < size / 2).astype(np.int64)


def prepare_blobs(data_dir: str, size: int) -> str:
  """``data_dir/blobs_<size>`` with :data:`DATASET` prepared from :func:`blob_images`
  (seed ``size``); reused when already prepared. The ``.npz`` written on the way is
  deleted. Returns the dataset's data_dir."""
  target = Path(data_dir) / f"blobs_{size}"
  if data.get_builder(DATASET, str(target)).is_prepared():
    return str(target)
  source = Path(data_dir) / f"blobs_{size}.npz"
  target.mkdir(parents=True, exist_ok=True)
  try:
    images, labels = blob_images(size, seed=size)
    np.savez(source, image=images, label=labels, class_names=np.array(["right", "left"]))
    del images
    data.prepare_and_summarize(DATASET, str(target), manual_dir=str(source))
  finally:
    source.unlink(missing_ok=True)
  return str(target)


def benchmark_config(data_dir: str, *, batch_size: int = 256) -> ml_collections.ConfigDict:
  """The tiny classifier on :data:`DATASET` and one DFT epoch, one update a batch,
  validation and a checkpoint only at its end."""
  dft = {"dataset": DATASET, "optimizer": "adam", "lr": 1e-2, "lr_schedule": "constant",
         "lam": 0.01, "lams": (), "lrs": (), "batch_size": batch_size, "updates_per_batch": 1,
         "epochs": 1, "transform": "tanh", "class_term": "hinge", "noise_shape": (),
         "parallel": "single"}
  model = {"preset": "tiny", "blocks": ((4,), (8,)), "dense": (16, 16), "num_classes": 2,
           "input_shape": (IMAGE_SIZE, IMAGE_SIZE, 3)}
  return ml_collections.ConfigDict({
      "seed": 0, "data_dir": data_dir, "eval_batch_size": batch_size, "log_every": 0,
      "checkpoint_every": 0, "dft": dft, "model": model})


def peak_rss_mb() -> float:
  """This process's peak resident set so far (``VmHWM`` of ``/proc/self/status``), in MB."""
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith("VmHWM:"):
      return int(line.split()[1]) / 1024
  raise OSError("No VmHWM in /proc/self/status: peak memory is measured on Linux only.")


def run_case(case: str, data_dir: str, workdir: str) -> float:
  """Runs one of :data:`CASES` on the dataset in ``data_dir``; returns the peak RSS (MB)."""
  if case not in CASES:
    raise ValueError(f"Unknown case {case!r}; choose from {CASES}.")
  config = benchmark_config(data_dir)
  sources = data.open_splits(DATASET, data_dir, config.model.input_shape)
  module = models.build_classifier(config.model)
  apply_fn = models.make_apply_fn(module)
  params = models.init_params(module, tuple(config.model.input_shape), config.seed)
  if case == "dft_epoch":
    fit_noise(config, config.dft, apply_fn, params, sources, Path(workdir))
  else:
    noise = 0.3 * np.random.default_rng(0).standard_normal(config.model.input_shape)
    write_results(Path(workdir), config, method="dft", dataset=DATASET,
                  eval_step=make_eval_step(apply_fn), transform="tanh",
                  before=(params, None), after=(params, jnp.asarray(noise, jnp.float32)),
                  sources=sources)
  return peak_rss_mb()


_CHILD = ("import sys; from dfm.studies import memory_benchmark as m; "
          "print('PEAK_RSS_MB', m.run_case(*sys.argv[1:]))")


def _measure_case(case: str, data_dir: str) -> float:
  """:func:`run_case` in a fresh Python process; its peak RSS in MB."""
  with tempfile.TemporaryDirectory(prefix="dfm_memory_") as workdir:
    done = subprocess.run([sys.executable, "-c", _CHILD, case, data_dir, workdir],
                          capture_output=True, text=True, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("PEAK_RSS_MB")]
  if done.returncode or not lines:
    raise RuntimeError(f"The {case} case on {data_dir} failed:\n{done.stderr[-2000:]}")
  return float(lines[-1].split()[1])


def measure(data_dir: str, sizes: tuple[int, ...] = (10_000, 100_000)) -> dict[str, Any]:
  """Peak RSS (MB) of each of :data:`CASES` on a blob dataset of each size, and the
  ratio of the largest size's to the smallest's (target: at most 1.2)."""
  results = {}
  for size in sizes:
    prepared = prepare_blobs(data_dir, size)
    results[str(size)] = {f"{case}_mb": round(_measure_case(case, prepared), 1)
                          for case in CASES}
  small, large = str(min(sizes)), str(max(sizes))
  results[f"ratio_{large}_to_{small}"] = {
      case: round(results[large][f"{case}_mb"] / results[small][f"{case}_mb"], 3)
      for case in CASES}
  return results

