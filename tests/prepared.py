"""Helpers for tests of the face builders: preparing from a manual_dir, reading back."""
from pathlib import Path

from dfm import data

SPLITS = ("train", "validation", "test")


def prepare_all(names: tuple[str, ...], manual_dir: Path, data_dir: Path) -> None:
  """Prepares every dataset `name/config` in `names` from the files in `manual_dir`."""
  for name in names:
    data.prepare(name, str(data_dir), manual_dir=str(manual_dir))


def read_all(name: str, data_dir: str) -> dict[str, list[dict]]:
  """Every decoded example of each split of a prepared dataset."""
  return {split: [dict(e) for e in data.open_split(name, split, data_dir)] for split in SPLITS}


def text(value) -> str:
  """A TFDS Text feature as str (the data source gives bytes)."""
  return value.decode() if isinstance(value, bytes) else str(value)
