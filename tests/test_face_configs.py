"""configs/faces.py end to end on the embedded LFW faces, with a tiny model."""
import json

from configs import faces
from dfm import data
from experiments import dft, train_classifier


def _config(name: str, data_dir: str, **overrides):
  config = faces.get_config(f"{name},fold=2,runlocal")
  with config.unlocked():
    config.data_dir = data_dir
    config.update(overrides)
  return config


def test_fold_and_size_pick_the_dataset_config():
  config = faces.get_config("lfw_subset_dft,fold=3,size=32")
  assert config.dft.dataset == "lfw_subset/32px_fold3"
  assert tuple(config.model.input_shape) == (32, 32, 1)


def test_train_classifier_then_dft_on_lfw_subset(tmp_path):
  data_dir = str(tmp_path / "data")
  data.prepare("lfw_subset/25px_fold2", data_dir)
  train_classifier.run(_config("lfw_subset", data_dir), str(tmp_path / "classifier"))
  results = dft.run(_config("lfw_subset_dft", data_dir, classifier_dir=str(tmp_path / "classifier")),
                    str(tmp_path / "dft"))
  saved = json.loads((tmp_path / "dft" / "metrics.json").read_text())
  assert saved["dataset"] == "lfw_subset/25px_fold2"
  assert saved["before"]["num_examples"] == 20 and saved["val"]["after"]["num_examples"] == 20
  assert len(saved["after"]["per_class_accuracy"]) == 2
  assert results["after"]["psnr_db"] > 0
