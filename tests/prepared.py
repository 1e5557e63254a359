"""Helpers for tests of the datasets: preparing from a manual_dir, reading back, and
`python -m experiments.prepare` run in this process."""
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from absl import flags

from dfm import data
from experiments import prepare as prepare_entrypoint

SPLITS = ("train", "validation", "test")


def write_and_prepare(
    factory: pytest.TempPathFactory, write: Callable[[Path], Any], names: tuple[str, ...]
) -> tuple[str, str, Any]:
  """Writes a published layout with `write(manual_dir)`, prepares each of `names` from it.

  Returns `(manual_dir, data_dir, what write returned)`.
  """
  manual_dir = factory.mktemp("manual")
  truth = write(manual_dir)
  data_dir = str(factory.mktemp("data"))
  for name in names:
    data.prepare(name, data_dir, manual_dir=str(manual_dir))
  return str(manual_dir), data_dir, truth


def read_all(name: str, data_dir: str) -> dict[str, list[dict]]:
  """Every decoded example of each split of a prepared dataset."""
  return {split: [dict(e) for e in data.open_split(name, split, data_dir)] for split in SPLITS}


def text(value) -> str:
  """A TFDS Text feature as str (the data source gives bytes)."""
  return value.decode() if isinstance(value, bytes) else str(value)


def run_prepare_command(*args: str) -> None:
  """``python -m experiments.prepare ARGS`` in this process, without a new interpreter's
  imports: absl parses ARGS into the entrypoint's own flags, then ``main`` runs (its
  output is the test's to capture). The flags are reset after.

  Only the entrypoint's flags are parsed, as in its own process: the session's global
  flags also hold those of every other module imported, some of them required.
  """
  own = flags.FLAGS.flags_by_module_dict()[prepare_entrypoint.__name__]
  scoped = flags.FlagValues()
  for flag in own:
    scoped[flag.name] = flag  # The same Flag objects, validators included.
  was_parsed = flags.FLAGS.is_parsed()
  try:
    argv = scoped(["experiments.prepare", *args])
    flags.FLAGS.mark_as_parsed()  # main reads its flags through the global FlagValues.
    prepare_entrypoint.main(argv)
  finally:
    for flag in own:
      flag.unparse()
    if not was_parsed:
      flags.FLAGS.unparse_flags()
