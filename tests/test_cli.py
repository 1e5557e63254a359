"""The command line as a newcomer meets it: --help, --dry_run, and one line per bad input."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import entrypoints

REPO = Path(__file__).resolve().parent.parent
DFT = ("experiments.dft", "--config=configs/digits.py:mnist5k_to_uci", "--workdir=runs/never")


def run(*args: str) -> subprocess.CompletedProcess:
  """``python -m ARGS`` from the repository root, as README's commands run."""
  return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, check=False)


def one_line_error(result: subprocess.CompletedProcess) -> str:
  """The single ``error:`` line a bad input ends with (no traceback before it)."""
  assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, result.stderr
  return lines[0]


HELP_FLAGS = ("--help", "--helpshort", "-h")
BAD_LINES = {
    ("experiments.dft", "--config=configs/digitz.py", "--workdir=runs/never"):
        "error: no config file configs/digitz.py (from --config=configs/digitz.py); run from "
        "the repository root",
    ("experiments.dft", "--config=configs/digits.py", "--workdir=runs/never"):
        "error: This config file needs a name: --config=FILE:NAME with NAME one of "
        "['mnist5k', 'mnist5k_to_uci'].",
    (*DFT, "--config.dft.lam=-1"): "error: config.dft.lam=-1.0 must be >= 0",
    (*DFT, "--config.dft.lam=nan"): "error: config.dft.lam=nan must be a finite number.",
}
NOT_ONNX = ("experiments.evaluate", "--config=configs/own_model.py:onnx,dataset=uci_digits")


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
  """The module's commands that need no fresh process, run in one (tests/entrypoints.py):
  command -> its exit status and output."""
  model = tmp_path_factory.mktemp("model") / "model.onnx"
  model.write_text("not a model")
  commands = [*(("experiments.dft", flag) for flag in HELP_FLAGS),
              (*DFT, "--config.dft.lam=0.5", "--dry_run"), *BAD_LINES,
              (*NOT_ONNX, f"--config.model.path={model}")]
  results = entrypoints.run_all([["-m", *command] for command in commands])
  return {**dict(zip(commands, results)), ("model",): model}


@pytest.mark.parametrize("flag", HELP_FLAGS)
def test_help_lists_the_entrypoints_own_flags_and_exits_0(ran, flag):
  result = ran[("experiments.dft", flag)]
  assert result.returncode == 0
  assert result.stdout.startswith("Data fine-tuning")
  listed = [line.split(":")[0].strip() for line in result.stdout.splitlines()
            if line.startswith("  --")]
  assert listed == ["--config", "--coordinator_address", "--dry_run", "--num_processes",
                    "--process_id", "--workdir"]
  assert "--config.FIELD=VALUE overrides" in result.stdout


def test_dry_run_prints_the_resolved_config_and_runs_nothing(ran):
  result = ran[(*DFT, "--config.dft.lam=0.5", "--dry_run")]
  assert result.returncode == 0, result.stderr
  config = json.loads(result.stdout.split("--config:\n", 1)[1].split("\n--", 1)[0])
  assert config["dft"]["lam"] == 0.5 and config["classifier_dir"] == "runs/mnist5k"
  assert "--workdir=runs/never" in result.stdout
  assert not (REPO / "runs" / "never").exists()


@pytest.mark.parametrize("args", BAD_LINES)
def test_bad_command_lines_end_with_one_line(ran, args):
  assert one_line_error(ran[args]).startswith(BAD_LINES[args])
  assert not (REPO / "runs" / "never").exists()


def test_a_data_dir_that_is_a_file_is_named(tmp_path):
  (tmp_path / "data").write_text("not a folder")
  line = one_line_error(run("experiments.prepare", "--dataset=uci_digits",
                            f"--data_dir={tmp_path / 'data'}"))
  assert line == (f"error: data_dir {tmp_path / 'data'} is a file, not a folder: pass "
                  "--data_dir (or --config.data_dir) a folder; it is created if missing.")


def test_prepare_prints_its_json_line_alone_and_no_download_banner(tmp_path):
  result = run("experiments.prepare", "--dataset=uci_digits", f"--data_dir={tmp_path}")
  assert result.returncode == 0, result.stderr
  assert json.loads(result.stdout)["splits"] == {"test": 359, "train": 1078, "validation": 360}
  assert "Downloading" not in result.stderr and "dataset_info.json" not in result.stderr
  assert "\x1b[" not in result.stderr  # No progress bars' cursor codes in a log.
  assert result.stderr.strip() == f"Preparing uci_digits in {tmp_path} (offline: nothing is "\
                                  "downloaded)."


def test_a_folder_of_unreadable_images_leaves_nothing_behind(tmp_path):
  for name in ("cat", "dog"):
    (tmp_path / "images" / name).mkdir(parents=True)
    for index in range(3):
      (tmp_path / "images" / name / f"{index}.png").write_bytes(b"not a png")
  Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "images" / "readme.png")
  (tmp_path / "data" / "mine").mkdir(parents=True)
  (tmp_path / "data" / "mine" / "notes.txt").write_text("the user's")
  line = one_line_error(run("experiments.prepare", "--dataset=image_folder/25px_gray",
                            f"--manual_dir={tmp_path / 'images'}",
                            f"--data_dir={tmp_path / 'data'}"))
  assert line == (f"error: 0 of 6 images in {tmp_path / 'images'} could be read (6 corrupt "
                  "image). Check that the files are images Pillow can open (.png, .jpg, .bmp).")
  left = sorted(str(path.relative_to(tmp_path / "data")) for path in (tmp_path / "data").rglob("*"))
  assert left == ["mine", "mine/notes.txt"]


def test_a_file_that_is_not_onnx_is_named_in_one_line(ran):
  model = ran[("model",)]
  line = one_line_error(ran[(*NOT_ONNX, f"--config.model.path={model}")])
  assert line.startswith(f"error: {model} is not an ONNX model (DecodeError: ")
  assert line.endswith("pass an .onnx file, e.g. one written by torch.onnx.export.")

