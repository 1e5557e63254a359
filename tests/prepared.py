"""Helpers for tests of the face builders: preparing from a manual_dir, reading back."""
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dfm import data

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
