"""Checkpoints that go wrong: a corrupt latest step, Ctrl-C, a full disk."""
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dfm.run import checkpoint, loop, methods
from experiments import cli
from tests.test_experiments import (REPO, _dft_config, _interrupt_after, _Interrupted,  # noqa: F401
                                    dft_run)


@pytest.fixture(scope="module")
def interrupted_run(data_dir, classifier_dir, tmp_path_factory) -> Path:
  """The workdir of a DFT run stopped after 3 batches (checkpoints 2 and 3), made once;
  each test damages a copy (:func:`_copy_of`)."""
  workdir = tmp_path_factory.mktemp("interrupted") / "run"
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loop, "run_loop", _interrupt_after(3, loop.run_loop))
    with pytest.raises(_Interrupted):
      methods.dft(_dft_config(data_dir, classifier_dir), str(workdir))
  return workdir


def _copy_of(run: Path, tmp_path: Path) -> Path:
  """A copy of the workdir ``run`` at ``tmp_path / "run"``; returns its checkpoints."""
  shutil.copytree(run, tmp_path / "run")
  return tmp_path / "run" / "checkpoints"


def _truncate(step: Path) -> None:
  """Cuts every data file of the step's state to half its length. (Cutting only the
  largest one, twice in a full run of the suite the step still restored: the file cut
  was apparently not one the restore needed.)"""
  for data in (step / "state").rglob("d/*"):
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])


def _scribble(step: Path) -> None:
  for data in (step / "state").rglob("d/*"):
    data.write_bytes(bytes(255 - b for b in data.read_bytes()))


def _scribble_json(name: str):
  def scribble(step: Path) -> None:
    text = (step / name).read_text()
    (step / name).write_text(text[:10] + "\x01" + text[11:])  # Line 1, column 11.
  return scribble


DAMAGE = {
    "truncated_array": _truncate,
    "scribbled_array": _scribble,
    "missing_data_item": lambda step: shutil.rmtree(step / "data"),
    "scribbled_state_metadata": _scribble_json("state/_METADATA"),
    "scribbled_data_position": _scribble_json("data/metadata"),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_corrupt_latest_checkpoint_is_moved_aside_and_the_previous_one_resumed(
    data_dir, classifier_dir, dft_run, interrupted_run, tmp_path, capsys, damage):
  straight, _ = dft_run
  config = _dft_config(data_dir, classifier_dir)
  checkpoints = _copy_of(interrupted_run, tmp_path)
  assert sorted(int(p.name) for p in checkpoints.iterdir() if p.name.isdigit()) == [2, 3]
  before = sorted(p.relative_to(checkpoints / "3") for p in (checkpoints / "3").rglob("*"))
  DAMAGE[damage](checkpoints / "3")
  capsys.readouterr()
  methods.dft(config, str(tmp_path / "run"))
  lines = [line for line in capsys.readouterr().out.splitlines() if "unreadable" in line]
  assert len(lines) == 1
  assert lines[0].startswith(f"Checkpoint 3 in {checkpoints} is unreadable (")
  assert lines[0].endswith(f"); moved to {checkpoints / 'corrupt' / '3'}; resuming from checkpoint 2.")
  kept = sorted(p.relative_to(checkpoints / "corrupt" / "3")
                for p in (checkpoints / "corrupt" / "3").rglob("*"))
  assert kept == [p for p in before if damage != "missing_data_item" or p.parts[0] != "data"]
  np.testing.assert_array_equal(np.load(tmp_path / "run" / "noise.npy"),
                                np.load(straight / "noise.npy"))


def test_every_checkpoint_corrupt_starts_from_scratch_and_keeps_them_all(
    data_dir, classifier_dir, dft_run, interrupted_run, tmp_path, capsys):
  straight, _ = dft_run
  config = _dft_config(data_dir, classifier_dir)
  checkpoints = _copy_of(interrupted_run, tmp_path)
  shutil.copytree(checkpoints / "3", checkpoints / "corrupt" / "3")  # From an earlier mishap.
  for step in (2, 3):
    _truncate(checkpoints / str(step))
  capsys.readouterr()
  methods.dft(config, str(tmp_path / "run"))
  lines = [line for line in capsys.readouterr().out.splitlines() if "unreadable" in line]
  assert [line.split(" is unreadable")[0] for line in lines] == [
      f"Checkpoint 3 in {checkpoints}", f"Checkpoint 2 in {checkpoints}"]
  assert lines[0].endswith(f"moved to {checkpoints / 'corrupt' / '3-2'}; starting from scratch.")
  assert sorted(p.name for p in (checkpoints / "corrupt").iterdir()) == ["2", "3", "3-2"]
  np.testing.assert_array_equal(np.load(tmp_path / "run" / "noise.npy"),
                                np.load(straight / "noise.npy"))


def test_ctrl_c_in_the_loop_saves_the_last_finished_batch(data_dir, classifier_dir, dft_run,
                                                         tmp_path, monkeypatch):
  straight, _ = dft_run
  config = _dft_config(data_dir, classifier_dir)
  with config.unlocked():
    config.checkpoint_every = 2 * config.dft.updates_per_batch  # Checkpoints 2 and 4.
  run_loop, calls = loop.run_loop, [0]

  def ctrl_c_before_batch_four(state, batches, update, **kwargs):
    def pressed(state, batch):
      calls[0] += 1
      if calls[0] == 4:
        raise KeyboardInterrupt
      return update(state, batch)
    return run_loop(state, batches, pressed, **kwargs)

  with monkeypatch.context() as patch:
    patch.setattr(loop, "run_loop", ctrl_c_before_batch_four)
    with pytest.raises(loop.Interrupted) as interrupted:
      methods.dft(config, str(tmp_path / "run"))
  assert str(interrupted.value) == \
      "interrupted at batch 3 of 5; saved; rerun the same command to resume"
  assert isinstance(interrupted.value, KeyboardInterrupt)
  assert checkpoint.manager(tmp_path / "run" / "checkpoints").latest_step() == 3
  methods.dft(config, str(tmp_path / "run"))
  np.testing.assert_array_equal(np.load(tmp_path / "run" / "noise.npy"),
                                np.load(straight / "noise.npy"))


def _dft_command(data_dir: str, classifier_dir: str, workdir: Path, *overrides: str
                 ) -> list[str]:
  return [sys.executable, "-m", "experiments.dft",
          "--config=configs/digits.py:mnist5k_to_uci,runlocal", f"--workdir={workdir}",
          f"--config.data_dir={data_dir}", f"--config.classifier_dir={classifier_dir}",
          "--config.figures=False", *overrides]


def _with_ctrl_c(command: list[str]) -> list[str]:
  """``python -m MODULE ARGS`` with Python's Ctrl-C handler, as in a user's terminal: a
  shell's background job (a CI runner may start the tests so) inherits SIGINT ignored."""
  module, args = command[2], command[3:]
  return [sys.executable, "-c",
          "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
          f"sys.argv = [{module!r}, *{args!r}]; runpy.run_module({module!r}, run_name='__main__')"]


# 80 small batches (5 epochs of 16 over uci_digits' 1,078 training images), a checkpoint
# and a log line every 10: long enough to press Ctrl-C in, cheap to run three times.
LONG_RUN = ("--config.dft.epochs=5", "--config.dft.batch_size=68", "--config.checkpoint_every=20",
            "--config.log_every=20")


def test_ctrl_c_on_the_command_line_saves_and_the_rerun_resumes(data_dir, classifier_dir,
                                                                tmp_path):
  # The uninterrupted run, here on one of this process's 4 devices: the program the
  # command runs on its one device (the same to the last bit or two: one of 784 values
  # differed by 7e-9, the host's threads being shared by 4 devices here).
  straight = _dft_config(data_dir, classifier_dir, epochs=5, batch_size=68, parallel="single")
  with straight.unlocked():
    straight.checkpoint_every = straight.log_every = 20
  methods.dft(straight, str(tmp_path / "straight"))
  command = _dft_command(data_dir, classifier_dir, tmp_path / "run", *LONG_RUN)
  process = subprocess.Popen(_with_ctrl_c(command), cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
  for line in process.stdout:
    if line.startswith("batch 10/80"):  # The first checkpoint; 70 batches to go.
      break
  process.send_signal(signal.SIGINT)
  stdout, stderr = process.communicate(timeout=120)
  assert process.returncode == 130, (stdout, stderr)
  assert "Traceback" not in stderr
  last = stderr.strip().splitlines()[-1]
  assert last.startswith("interrupted at batch ") and last.endswith(
      " of 80; saved; rerun the same command to resume"), stderr
  done = int(last.split()[3])
  assert 10 <= done < 80, stdout
  assert checkpoint.manager(tmp_path / "run" / "checkpoints").latest_step() == done
  rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr
  assert f"Resumed from the checkpoint after batch {done}." in rerun.stdout
  np.testing.assert_allclose(np.load(tmp_path / "run" / "noise.npy"),
                             np.load(tmp_path / "straight" / "noise.npy"), rtol=0, atol=1e-6)


def _can_mount_a_tmpfs() -> bool:
  if shutil.which("unshare") is None:
    return False
  probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
                         capture_output=True, check=False)
  return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_a_tmpfs(),
                    reason="needs `unshare -rm` to mount a small tmpfs as a full disk")
def test_full_disk_ends_the_command_with_one_line(data_dir, classifier_dir, tmp_path):
  workdir = tmp_path / "disk"
  workdir.mkdir()
  command = " ".join(_dft_command(data_dir, classifier_dir, workdir / "run",
                                  "--config.dft.epochs=1"))
  started = time.monotonic()
  result = subprocess.run(
      ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=100k tmpfs {workdir} && {command}"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr
  assert result.stderr.strip().splitlines() == [
      f"error: No space left on device to save checkpoint 2 in {workdir / 'run' / 'checkpoints'}: "
      "free some space (or pass a --workdir on a larger disk) and rerun the same command; it "
      "resumes from the last checkpoint"], result.stderr
  assert time.monotonic() - started < 300


def test_disk_full_outside_a_checkpoint_is_one_line_too():
  def write():
    raise OSError(28, "No space left on device", "/runs/x/metrics.jsonl")

  with pytest.raises(SystemExit) as exited:
    cli.exit_on_bad_input(write)
  assert exited.value.code == (
      "error: No space left on device writing /runs/x/metrics.jsonl: free some space (or pass "
      "a --workdir on a larger disk) and rerun the same command")


def test_other_os_errors_keep_their_traceback():
  def fail():
    raise PermissionError(13, "Permission denied", "/runs/x")

  with pytest.raises(PermissionError):
    cli.exit_on_bad_input(fail)
