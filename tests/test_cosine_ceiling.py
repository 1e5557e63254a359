"""The cosine ceiling: white-box DFT with gradients of a chosen cosine, as a study and a command."""
import json

import pytest

from configs import digits, query
from dfm.run import methods
from dfm.studies import cosine_ceiling
from tests.entrypoints import run_all


def _query_config(data_dir, classifier_dir):
  config = query.get_config("digits,runlocal")
  with config.unlocked():
    config.data_dir, config.classifier_dir = data_dir, classifier_dir
  return config


@pytest.fixture(scope="module")
def white_box(data_dir, classifier_dir, tmp_path_factory):
  """A finished runlocal white-box DFT run of the runlocal classifier on uci_digits."""
  config = digits.get_config("mnist5k_to_uci,runlocal")
  with config.unlocked():
    config.data_dir, config.classifier_dir, config.figures = data_dir, classifier_dir, False
  workdir = tmp_path_factory.mktemp("white_box")
  methods.dft(config, str(workdir))
  return str(workdir)


def test_the_ceiling_chooses_the_lr_on_validation_and_writes_its_table(
    data_dir, classifier_dir, white_box, tmp_path):
  config = _query_config(data_dir, classifier_dir)
  settings = {"cosines": [1.0, 0.2], "steps": [2], "lrs": [0.01, 0.3], "seeds": [0, 1],
              "white_box": white_box}
  text = cosine_ceiling.run(config, str(tmp_path / "ceiling"), **settings)
  records = json.loads((tmp_path / "ceiling" / "ceiling.json").read_text())["records"]
  assert [(r["steps"], r["cosine"]) for r in records] == [(2, 1.0), (2, 0.2)]
  for record in records:
    assert len(record["runs"]) == 2 and record["lr"] in (0.01, 0.3)
  assert text.count("\n| 2 |") == 2 and (tmp_path / "ceiling" / "ceiling.csv").is_file()
  with pytest.raises(ValueError, match="different config"):
    cosine_ceiling.run(config, str(tmp_path / "ceiling"), **{**settings, "steps": [3]})


def test_a_reference_of_another_classifier_or_none_is_refused(data_dir, classifier_dir,
                                                              white_box, tmp_path):
  config = _query_config(data_dir, classifier_dir)
  with pytest.raises(ValueError, match="No finished white-box DFT run"):
    cosine_ceiling.white_box_reference(config, str(tmp_path))
  with config.unlocked():
    config.classifier_dir = str(tmp_path / "other")
  with pytest.raises(ValueError, match="pass a run of this classifier"):
    cosine_ceiling.white_box_reference(config, white_box)


def test_the_command_prints_the_table(data_dir, classifier_dir, white_box, tmp_path):
  [result] = run_all([["-m", "experiments.cosine_ceiling", "--config=configs/query.py:digits,runlocal",
                       f"--config.data_dir={data_dir}", f"--config.classifier_dir={classifier_dir}",
                       f"--white_box={white_box}", f"--workdir={tmp_path / 'ceiling'}",
                       "--cosines=0.5", "--steps=2", "--lrs=0.1", "--seeds=0"]])
  assert result.returncode == 0, result.stderr[-2000:]
  assert "| 2 | 0.5 | 0.1 |" in result.stdout
