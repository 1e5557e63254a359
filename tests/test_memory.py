"""Memory flat in dataset size: the report's SSIM and samples read a batch at a time, and
give what the whole test split held in memory gave; the memory benchmark's data."""
import functools

import jax
import numpy as np
import pytest

from dfm import data
from dfm.report import metrics
from dfm.report.scores import Scores
from dfm.run import results
from dfm.studies import memory_benchmark
from dfm.transform import perturb

COUNT = 50


def _in_memory(source, limit: int) -> np.ndarray:
  """The first ``limit`` images as the evaluation batches give them, all held at once
  (what the report read before it streamed)."""
  images = [np.asarray(b["image"])[np.asarray(b["mask"]) > 0]
            for b in data.iterate_eval_batches(source, batch_size=32)]
  return np.concatenate(images)[:limit]


@pytest.fixture(scope="module", params=["array_record", "arrays"])
def source(request, data_dir):
  """uci_digits' test split as prepared (raw ArrayRecord records), and as NumPy arrays."""
  split = data.open_split("uci_digits", "test", data_dir)
  if request.param == "array_record":
    return split
  images, labels = zip(*[(e["image"], e["label"]) for e in (split[i] for i in range(COUNT))])
  arrays = (np.stack(images), np.array(labels))
  return data.array_splits({name: arrays for name in data.SPLITS}, num_classes=10)["test"]


@pytest.fixture(scope="module")
def perturbed_of():
  noise = 0.5 * np.random.default_rng(0).standard_normal(data.IMAGE_SHAPE).astype(np.float32)
  compiled = jax.jit(functools.partial(perturb, transform="tanh"))
  return lambda images: np.asarray(compiled(images, noise))


@pytest.mark.parametrize("batch_size", [7, 64])
def test_streamed_ssim_is_the_in_memory_mean(source, perturbed_of, batch_size):
  images = _in_memory(source, COUNT)
  expected = metrics.mean_ssim(images, perturbed_of(images))
  assert results.streamed_ssim(source, perturbed_of, count=COUNT,
                               batch_size=batch_size) == expected
  assert 0 < expected < 0.99


def test_samples_are_read_back_by_index(source, perturbed_of):
  images = _in_memory(source, COUNT)
  labels = np.arange(COUNT) % 10
  before = Scores(labels, np.eye(10)[(labels + 1) % 10], 0.0, 0)
  right = np.isin(np.arange(COUNT), [3, 17, 41])
  after = Scores(labels, np.eye(10)[np.where(right, labels, (labels + 1) % 10)], 0.0, 0)
  samples = results._samples(source, before, after, perturbed_of)  # pylint: disable=protected-access
  np.testing.assert_array_equal(samples.images, images[[3, 17, 41]])
  np.testing.assert_array_equal(samples.perturbed, perturbed_of(images)[[3, 17, 41]])
  assert samples.labels.tolist() == [3, 7, 1] and samples.after.tolist() == [3, 7, 1]
  none = results._samples(source, before, before, perturbed_of)  # pylint: disable=protected-access
  assert len(none.images) == len(none.perturbed) == len(none.labels) == 0


def test_blob_images_are_seeded_and_both_classes():
  images, labels = memory_benchmark.blob_images(300, seed=1, size=16)
  again, _ = memory_benchmark.blob_images(300, seed=1, size=16)
  assert images.shape == (300, 16, 16, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images, again)
  assert 0.3 < labels.mean() < 0.7 and images.std() > 10


def test_benchmark_data_is_prepared_once_and_its_cases_are_checked(tmp_path):
  prepared = memory_benchmark.prepare_blobs(str(tmp_path), 40)
  assert not list(tmp_path.glob("*.npz"))
  assert len(data.open_split(memory_benchmark.DATASET, "train", prepared)) == 24
  before = sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*.array_record*"))
  assert memory_benchmark.prepare_blobs(str(tmp_path), 40) == prepared
  assert sorted(p.stat().st_mtime_ns for p in tmp_path.rglob("*.array_record*")) == before
  with pytest.raises(ValueError, match="Unknown case 'train'"):
    memory_benchmark.run_case("train", prepared, str(tmp_path))
