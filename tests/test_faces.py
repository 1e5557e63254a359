"""Tests of the face-dataset machinery and the embedded `lfw_subset` builder."""

import json

import numpy as np
import pytest
from absl import flags
from skimage.data import lfw_subset

from dfm import data
from dfm.data import lfw_subset as lfw
from experiments import prepare as prepare_entrypoint
from prepared import run_prepare_command

SPLITS = ("train", "validation", "test")
FOLDS = range(lfw.NUM_FOLDS)


@pytest.fixture(scope="module")
def faces_dir(tmp_path_factory) -> str:
  """lfw_subset prepared at every size (fold 0) and with every test fold (25px)."""
  root = str(tmp_path_factory.mktemp("faces"))
  for size in data.IMAGE_SIZES:
    data.prepare(f"lfw_subset/{size}px_fold0", root)
  for fold in FOLDS:
    data.prepare(f"lfw_subset/25px_fold{fold}", root)
  return root


def face_rows(name: str, split: str, data_dir: str) -> list[dict]:
  """The examples of a 25px split, each with `row`: its index in `lfw_subset()`."""
  originals = np.round(lfw_subset()[: lfw.NUM_FACES] * 255).astype(np.uint8)
  source = data.open_split(name, split, data_dir)
  rows = []
  for i in range(len(source)):
    example = dict(source[i])
    (matches,) = np.flatnonzero((originals == example["image"][..., 0]).all(axis=(1, 2)))
    rows.append({**example, "row": int(matches)})
  return rows


@pytest.mark.parametrize("size", data.IMAGE_SIZES)
def test_each_size_stores_uint8_crops_of_that_size(faces_dir, size):
  source = data.open_split(f"lfw_subset/{size}px_fold0", "train", faces_dir)
  batch = next(data.iterate_eval_batches(source, batch_size=64))
  assert source[0]["image"].dtype == np.uint8
  assert batch["image"].shape == (64, size, size, 1) and batch["mask"].sum() == 60
  assert 0 <= batch["image"].min() and batch["image"].max() <= 1


def test_default_config_is_25px_fold0(faces_dir):
  assert data.get_builder("lfw_subset", faces_dir).builder_config.name == "25px_fold0"
  assert data.prepare("lfw_subset", faces_dir)["splits"] == {"test": 20, "train": 60,
                                                             "validation": 20}


def test_labels_match_the_csv(faces_dir):
  labels = lfw.load_labels()
  counts = labels["male"].sum(), (1 - labels["male"]).sum(), labels["uncertain"].sum()
  assert counts == (82, 18, 11)
  rows = sum((face_rows("lfw_subset/25px_fold0", s, faces_dir) for s in SPLITS), [])
  assert sorted(r["row"] for r in rows) == list(range(100))
  assert all(r["label"] == labels["male"][r["row"]] for r in rows)
  assert all(r["uncertain"] == labels["uncertain"][r["row"]] for r in rows)


def test_folds_are_stratified_disjoint_and_cover_all_faces(faces_dir):
  tests = [{r["row"] for r in face_rows(f"lfw_subset/25px_fold{k}", "test", faces_dir)}
           for k in FOLDS]
  assert sorted(sum(map(list, tests), [])) == list(range(100))
  women = [sum(1 - lfw.load_labels()["male"][sorted(t)]) for t in tests]
  assert sorted(women) == [3, 3, 4, 4, 4] and all(len(t) == 20 for t in tests)
  validation = {r["row"] for r in face_rows("lfw_subset/25px_fold0", "validation", faces_dir)}
  assert validation == tests[1]


def test_fold_splits_and_stratified_folds():
  folds = data.stratified_folds(np.repeat([0, 1], [10, 40]), num_folds=5, seed=0)
  assert np.bincount(folds[:10]).tolist() == [2] * 5 and np.bincount(folds[10:]).tolist() == [8] * 5
  parts = data.fold_splits(folds, test_fold=4)
  assert np.array_equal(parts["validation"], np.flatnonzero(folds == 0))
  assert sorted(np.concatenate(list(parts.values())).tolist()) == list(range(50))


def test_summary_counts_labels_per_split_and_skips(faces_dir):
  summary = data.prepare_and_summarize("lfw_subset/25px_fold2", faces_dir, with_summary=True)
  assert summary["splits"] == {"test": 20, "train": 60, "validation": 20}
  assert summary["skipped"] == {}
  men = [summary["labels"][s]["label"]["man"] for s in SPLITS]
  women = [summary["labels"][s]["label"]["woman"] for s in SPLITS]
  assert sum(men) == 82 and sum(women) == 18
  assert sum(summary["labels"][s]["uncertain"]["yes"] for s in SPLITS) == 11


def test_max_examples_caps_each_split(tmp_path):
  summary = data.prepare_and_summarize("lfw_subset/32px_fold1", str(tmp_path), max_examples=3,
                                   manual_dir=str(tmp_path / "unused"))
  assert summary["splits"] == {"test": 3, "train": 3, "validation": 3}


def test_entrypoint_prints_the_summary_as_one_json_line(faces_dir, capsys):
  run_prepare_command("--dataset=lfw_subset/64px_fold0", f"--data_dir={faces_dir}", "--summary")
  out = capsys.readouterr().out
  assert out.endswith("\n") and out.count("\n") == 1
  summary = json.loads(out)
  assert sum(summary["labels"]["test"]["label"].values()) == 20
  assert summary["skipped"] == {} and not summary["built"]


@pytest.mark.parametrize("name, message", [
    ("lfw_subset/33px_fold0", r"Unknown config '33px_fold0' .* valid configs: \['25px_fold0'"),
    ("lfw_subset/32px_fold5", "valid configs: .*'224px_fold4'"),
    ("mnist5k/32px", "'mnist5k'; it has no configs"),
    ("celeb_a", r"known datasets: \['celeba', 'image_folder', 'lfw', 'lfw_subset', 'mnist5k', "
                r"'muct', 'npz', 'uci_digits'\]"),
])
def test_bad_names_are_clear_errors(faces_dir, name, message):
  with pytest.raises(ValueError, match=message):
    data.prepare(name, faces_dir)
  with pytest.raises(ValueError, match=message):
    data.open_split(name, "train", faces_dir)
  with pytest.raises(flags.ValidationError, match=message):
    prepare_entrypoint._check_dataset(name)  # pylint: disable=protected-access
