"""The entrypoints end to end on tiny configs: outputs, resume, and bad input."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np
import pytest
from absl import flags

from configs import digits
from dfm import data
from dfm.run import loop
from dfm.run import methods
from dfm.run import workdir as workdir_lib
from experiments import cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dft_run(data_dir, classifier_dir, tmp_path_factory):
  """``(workdir, results)`` of one finished DFT run of the runlocal config."""
  workdir = tmp_path_factory.mktemp("dft")
  config = _dft_config(data_dir, classifier_dir)
  config.figures = True  # Every output, the report's figures included.
  return workdir, methods.dft(config, str(workdir))


def _config(name: str, **overrides):
  """The runlocal config ``name`` with top-level ``overrides``; no report figures unless
  ``figures=True`` (they are tested on dft_run and in test_report)."""
  config = digits.get_config(f"{name},runlocal")
  with config.unlocked():
    for key, value in {"figures": False, **overrides}.items():
      config[key] = value
  return config


def _dft_config(data_dir, classifier_dir, **dft_overrides):
  config = _config("mnist5k_to_uci", data_dir=data_dir, classifier_dir=classifier_dir)
  config.dft.update(dft_overrides)
  return config


def test_dft_run_writes_every_output(dft_run):
  tmp_path, results = dft_run
  for name in ("config.json", "metrics.json", "metrics.jsonl", "noise.npy", "noise.png"):
    assert (tmp_path / name).is_file(), name
  saved = json.loads((tmp_path / "metrics.json").read_text())
  assert saved["split"] == "test"
  assert set(saved["after"]) >= {"accuracy", "psnr_db", "per_class_accuracy"}
  assert len(saved["before"]["per_class_accuracy"]) == 10
  assert set(saved["val"]) == {"before", "after"}
  assert saved["after"]["accuracy"] == results["after"]["accuracy"]
  assert np.load(tmp_path / "noise.npy").shape == (28, 28, 1)
  assert np.abs(np.load(tmp_path / "noise.npy")).max() > 0


class _Interrupted(Exception):
  pass


def _interrupt_after(batches: int, run_loop):
  """``run_loop`` whose update raises before its ``batches + 1``-th batch."""

  def interrupted(state, data, update, **kwargs):
    calls = [0]

    def interrupting(state, batch):
      if calls[0] == batches:
        raise _Interrupted
      calls[0] += 1
      return update(state, batch)

    return run_loop(state, data, interrupting, **kwargs)

  return interrupted


def test_interrupted_run_resumes_to_the_same_noise(data_dir, classifier_dir, dft_run, tmp_path,
                                                   monkeypatch):
  straight, _ = dft_run  # Checkpointed every batch; the cadence does not change the noise.
  config = _dft_config(data_dir, classifier_dir)
  with config.unlocked():
    config.checkpoint_every = 2 * config.dft.updates_per_batch  # Batch 3 is replayed.
  with monkeypatch.context() as patch:
    patch.setattr(loop, "run_loop", _interrupt_after(3, loop.run_loop))
    with pytest.raises(_Interrupted):
      methods.dft(config, str(tmp_path / "resumed"))
  assert not (tmp_path / "resumed" / "noise.npy").exists()
  methods.dft(config, str(tmp_path / "resumed"))
  np.testing.assert_array_equal(np.load(tmp_path / "resumed" / "noise.npy"),
                                np.load(straight / "noise.npy"))
  # config.figures=False: the report's tables, no PNG.
  assert not list((tmp_path / "resumed").glob("*.png"))
  assert "Figures not drawn" in (tmp_path / "resumed" / "report.md").read_text()
  logged = [json.loads(line)["batch"]
            for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
  assert logged == sorted(set(logged))


def test_workdir_of_another_config_is_refused_and_kept(data_dir, classifier_dir, dft_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(dft_run[0], workdir)
  before = {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()}
  with pytest.raises(ValueError, match=r"different config \(differs in: dft.lam\)"):
    methods.dft(_dft_config(data_dir, classifier_dir, lam=0.5), str(workdir))
  assert {path: path.read_bytes() for path in workdir.rglob("*") if path.is_file()} == before


def test_a_run_resumes_with_or_without_figures(tmp_path):
  config = ml_collections.ConfigDict({"dft": {"lam": 0.1}, "figures": True})
  workdir_lib.claim_workdir(str(tmp_path), config)
  config.figures = False
  assert workdir_lib.claim_workdir(str(tmp_path), config) == tmp_path
  config.dft.lam = 0.2
  with pytest.raises(ValueError, match=r"differs in: dft.lam\)"):
    workdir_lib.claim_workdir(str(tmp_path), config)


def test_a_run_made_before_a_field_was_added_is_the_same_config(tmp_path):
  """A config.json without a field dfm added later at a neutral value (dft.lams: ()) still
  binds the workdir; the same field at another value, or another field, does not."""
  config = ml_collections.ConfigDict({"dft": {"lam": 0.1, "lams": ()}, "seed": 0})
  (tmp_path / "config.json").write_text(json.dumps({"dft": {"lam": 0.1}, "seed": 0}))
  assert workdir_lib.claim_workdir(str(tmp_path), config) == tmp_path
  config.dft.lams = (0.1, 1.0)
  with pytest.raises(ValueError, match=r"differs in: dft.lams\)"):
    workdir_lib.claim_workdir(str(tmp_path), config)


def test_unwritable_workdir_is_refused(data_dir, classifier_dir, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a directory")
  with pytest.raises(ValueError, match="Cannot write to workdir"):
    methods.dft(_dft_config(data_dir, classifier_dir), str(blocker / "run"))


def test_checkpoint_that_does_not_fit_the_config_is_refused(data_dir, classifier_dir, tmp_path):
  config = _dft_config(data_dir, classifier_dir)
  config.model.dense = (32, 16)
  with pytest.raises(ValueError, match=r"kernel.]: checkpoint \(392, 16\) vs config \(392, 32\)"):
    methods.dft(config, str(tmp_path))


def test_missing_classifier_checkpoint_is_explained(data_dir, tmp_path):
  config = _dft_config(data_dir, str(tmp_path / "nothing"))
  with pytest.raises(ValueError, match="no finished classifier run.*train_classifier"):
    methods.dft(config, str(tmp_path / "run"))


def test_noise_that_does_not_fit_the_images_is_refused(data_dir, classifier_dir, tmp_path):
  config = _dft_config(data_dir, classifier_dir, noise_shape=(7, 7, 3))
  with pytest.raises(ValueError, match=r"Noise of shape \(7, 7, 3\) does not fit"):
    methods.dft(config, str(tmp_path))


def test_unprepared_dataset_is_explained(classifier_dir, tmp_path):
  config = _dft_config(str(tmp_path / "empty"), classifier_dir)
  with pytest.raises(FileNotFoundError, match="python -m experiments.prepare --dataset=uci_digits"):
    methods.dft(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_bad_input_on_the_command_line_ends_with_the_message_alone(tmp_path):
  command = [sys.executable, "-m", "experiments.dft", "--config=configs/digits.py:mnist5k_to_uci",
             f"--workdir={tmp_path / 'run'}", f"--config.classifier_dir={tmp_path}"]
  result = subprocess.run(command, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().startswith("error: ") and "no finished classifier run" in result.stderr
  assert "Traceback" not in result.stderr


def test_unfinished_classifier_is_refused(data_dir, classifier_dir, tmp_path):
  shutil.copytree(classifier_dir, tmp_path / "unfinished")
  (tmp_path / "unfinished" / "metrics.json").unlink()
  config = _dft_config(data_dir, str(tmp_path / "unfinished"))
  with pytest.raises(ValueError, match="no finished classifier run"):
    methods.dft(config, str(tmp_path / "run"))


@pytest.mark.parametrize("field, value, message", [
    ("updates_per_batch", 0, "updates_per_batch must be a positive integer"),
    ("lr", -1.0, "lr must be positive"),
    ("transform", "tahn", "config.dft.transform='tahn' is not one of"),
    ("lam", -1.0, r"config.dft.lam=-1.0 must be >= 0"),
    ("lam", float("nan"), r"config.dft.lam=nan must be a finite number"),
    ("lr", float("inf"), r"config.dft.lr=inf must be a finite number"),
])
def test_bad_schedule_is_refused_before_the_workdir_is_claimed(
    data_dir, classifier_dir, tmp_path, field, value, message):
  config = _dft_config(data_dir, classifier_dir, **{field: value})
  with pytest.raises(ValueError, match=message):
    methods.dft(config, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_checkpoint_cadence_must_be_whole_batches(data_dir, classifier_dir, tmp_path):
  config = _dft_config(data_dir, classifier_dir)
  with config.unlocked():
    config.checkpoint_every = 3
  with pytest.raises(ValueError, match="multiple of config.dft.updates_per_batch=2"):
    methods.dft(config, str(tmp_path / "run"))


@pytest.fixture
def command_line(monkeypatch):
  """``launch(run, *flags)``: ``experiments.cli.launch(run)`` with ``sys.argv`` set to
  the flags, in this process (the flags it defines are removed afterwards).

  Only for flags that fail while parsing: a command line that parses would then fail
  the session's other required flags (those of experiments.prepare, imported by the
  data tests), which its own process would not have.
  """
  def launch(run, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", ["experiments.dft", *args])
    was_parsed = flags.FLAGS.is_parsed()
    try:
      cli.launch(run)
    finally:
      for name in set(flags.FLAGS):
        if name == "workdir" or name.startswith("config"):
          delattr(flags.FLAGS, name)
      if not was_parsed:
        flags.FLAGS.unparse_flags()

  return launch


def test_misspelt_config_flag_ends_the_launch_with_one_line(command_line, tmp_path):
  started = []
  with pytest.raises(SystemExit) as exited:
    command_line(lambda config, workdir: started.append(workdir),
                 f"--config={REPO / 'configs' / 'digits.py'}:mnist5k_to_uci",
                 f"--workdir={tmp_path}", "--config.dft.lamm=0.1")
  # A message as the exit code: Python prints it to stderr and exits with status 1.
  assert isinstance(exited.value.code, str)
  error, hint = exited.value.code.splitlines()
  assert error == "error: unknown config field 'lamm' Did you mean \"lam\" instead of \"lamm\"?"
  assert hint == "Pass --help to see the flags, --dry_run to see the config."
  assert not started and not (tmp_path / "config.json").exists()


def test_unknown_config_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"use one of \['mnist5k', 'mnist5k_to_uci'\]"):
    digits.get_config("mnist")
