"""configs/faces.py: every paper attribute resolves; train + DFT run end to end on fixtures."""
import json

import pytest

from configs import faces
from dfm import data
from dfm.run import methods
from test_celeba import write_celeba
from test_lfw import write_lfw

PAPER_CONFIGS = [
    *(f"celeba,attribute={a}" for a in
      ("male", "smiling", "attractive", "wearing_lipstick", "bushy_eyebrows", "pale_skin")),
    *(f"lfw,attribute={a}" for a in ("male", "smiling", "bushy_eyebrows", "pale_skin")),
    "lfw,protocol=identity", "lfw_subset,fold=4", "muct,size=112",
]


@pytest.mark.parametrize("arg", PAPER_CONFIGS)
def test_every_paper_attribute_names_a_dataset_config(arg):
  for name in (arg, arg.replace(",", "_dft,", 1)):
    config = faces.get_config(name)
    dataset = (config.get("train") or config.get("dft")).dataset
    data.preparation.parse_name(dataset)  # Raises for a config the builder lacks.


def test_fold_and_size_pick_the_dataset_config():
  config = faces.get_config("lfw_subset_dft,fold=3,size=32")
  assert config.dft.dataset == "lfw_subset/32px_fold3"
  assert tuple(config.model.input_shape) == (32, 32, 1)
  assert config.classifier_dir == "runs/lfw_subset_32px_fold3"


def test_train_classifier_then_dft_end_to_end(tmp_path):
  """One family, lfw_subset (embedded): every family's dataset configs are checked above
  and their builders by their own tests; the inter test below runs RGB faces."""
  train_config = faces.get_config("lfw_subset,fold=2,runlocal")
  dft_config = faces.get_config("lfw_subset_dft,fold=2,runlocal")
  dataset = train_config.train.dataset
  assert dataset == dft_config.dft.dataset == "lfw_subset/25px_fold2"
  data_dir = str(tmp_path / "data")
  data.prepare(dataset, data_dir)
  with train_config.unlocked(), dft_config.unlocked():
    train_config.data_dir = dft_config.data_dir = data_dir
    dft_config.classifier_dir = str(tmp_path / "classifier")
    dft_config.figures = False  # Drawn in colour by the inter test below.
  methods.train_classifier(train_config, str(tmp_path / "classifier"))
  methods.dft(dft_config, str(tmp_path / "dft"))
  saved = json.loads((tmp_path / "dft" / "metrics.json").read_text())
  assert saved["dataset"] == dataset
  assert len(saved["after"]["per_class_accuracy"]) == 2
  assert saved["after"]["psnr_db"] > 0
  report = (tmp_path / "dft" / "report.md").read_text()
  # Binary attributes: the paper's Table 4, with lfw_subset's class names.
  assert "TPR (man)" in report and "TNR (woman)" in report


def test_paper_inter_config_runs_on_the_face_fixtures(tmp_path):
  """configs/paper/inter.py:celeba-lfw:smiling,runlocal: a CelebA classifier, DFT on LFW.

  The one run of RGB images (noise, figures and report in colour), of an attribute
  other than gender, and of a compare of one method across datasets.
  """
  from configs.paper import inter  # pylint: disable=import-outside-toplevel
  from dfm.studies import compare  # pylint: disable=import-outside-toplevel
  config = inter.get_config("celeba-lfw:smiling,size=25,runlocal")
  data_dir = str(tmp_path / "data")
  for dataset, write in ((config.train.dataset, write_celeba), (config.dft.dataset, write_lfw)):
    write(tmp_path / dataset.split("/")[0])
    data.prepare(dataset, data_dir, manual_dir=str(tmp_path / dataset.split("/")[0]))
  with config.unlocked():
    config.data_dir = data_dir
  comparison = compare.run(config, str(tmp_path / "compare"), seeds=1, methods=["dft"])
  assert comparison["dataset"] == "lfw/25px_smiling_random"
  assert "TPR (yes)" in (tmp_path / "compare" / "dft" / "seed0" / "report.md").read_text()
