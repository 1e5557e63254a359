"""Tests of the `celeba` builder on files in CelebA's exact published layout."""

import os
import re

import numpy as np
import pytest
from PIL import Image

from dfm import data
from dfm.data import celeba
from dfm.data import faces
from dfm.data import reading

SPLITS = ("train", "validation", "test")
NUM_ROWS = 26  # 24 real images, one listed but absent, one corrupt.
PARTITION = ["0"] * 16 + ["1"] * 5 + ["2"] * 5
ABSENT, CORRUPT = "000007.jpg", "000023.jpg"  # In train and in test.
BORDER = (255, 0, 0)  # Rows the centred square crops away.


def colour_of(row: int) -> tuple[int, int, int]:
  """The flat colour of image `row` inside its centred square."""
  return (9 * row, 200 - 5 * row, 60 + 3 * row)


def write_celeba(root: str, *, num_rows: int = NUM_ROWS) -> dict:
  """Writes CelebA's published layout under `root`; returns {split: {name: {attr: 0/1}}}.

  The attribute file has the real header (count line, the 40 names, a trailing
  space) and the real padding (two spaces before `1`, one before `-1`); the
  partition file has CRLF line endings. Images are 178x218 JPEGs: a flat colour
  with red bands in the 20 rows above and below the centred square.
  """
  rng = np.random.default_rng(0)
  values = rng.choice([-1, 1], size=(num_rows, len(celeba.ATTRIBUTES)))
  os.makedirs(os.path.join(root, celeba.IMAGES_DIR))
  expected = {split: {} for split in SPLITS}
  rows, partition = [], []
  for row in range(1, num_rows + 1):
    name = f"{row:06d}.jpg"
    path = os.path.join(root, celeba.IMAGES_DIR, name)
    if name != ABSENT:
      image = Image.new("RGB", (178, 218), BORDER)
      image.paste(colour_of(row), (0, 20, 178, 198))
      image.save(path, quality=95)
    if name == CORRUPT:  # Truncated, as by a broken download or unzip.
      with open(path, "r+b") as file:
        file.truncate(300)
    rows.append(name + "".join(f" {v:2d}" for v in values[row - 1]))
    partition.append(f"{name} {PARTITION[row - 1]}")
    if name not in (ABSENT, CORRUPT):
      split = SPLITS[int(PARTITION[row - 1])]
      expected[split][name] = dict(zip(celeba.ATTRIBUTES, (values[row - 1] == 1).astype(int)))
  header = [str(num_rows), " ".join(celeba.ATTRIBUTES) + " "]
  with open(os.path.join(root, celeba.ATTRIBUTES_FILE), "w", newline="\n") as file:
    file.write("\n".join(header + rows) + "\n")
  with open(os.path.join(root, celeba.PARTITION_FILE), "w", newline="") as file:
    file.write("\r\n".join(partition) + "\r\n")
  return expected


def snapshot(root: str) -> dict:
  """Every file under `root` with its size and modification time."""
  return {
      os.path.join(folder, name): (os.stat(os.path.join(folder, name)).st_size,
                                   os.stat(os.path.join(folder, name)).st_mtime_ns)
      for folder, _, names in os.walk(root) for name in names
  }


@pytest.fixture(scope="module")
def celeba_files(tmp_path_factory) -> tuple[str, dict]:
  """The published layout written once: (manual_dir, expected labels per split)."""
  root = str(tmp_path_factory.mktemp("celeba_manual"))
  return root, write_celeba(root)


@pytest.fixture(scope="module")
def prepared(celeba_files, tmp_path_factory) -> str:
  """`celeba/25px_smiling` and `celeba/32px_male` prepared into one data_dir."""
  manual_dir, _ = celeba_files
  before = snapshot(manual_dir)
  data_dir = str(tmp_path_factory.mktemp("celeba_data"))
  for name in ("celeba/25px_smiling", "celeba/32px_male"):
    data.prepare(name, data_dir, manual_dir=manual_dir)
  assert snapshot(manual_dir) == before  # Nothing in manual_dir is modified.
  return data_dir


@pytest.mark.parametrize("name, attribute, size", [
    ("celeba/25px_smiling", "Smiling", 25), ("celeba/32px_male", "Male", 32)])
def test_labels_images_and_splits_match_the_files(celeba_files, prepared, name, attribute, size):
  _, expected = celeba_files
  for split in SPLITS:
    source = data.open_split(name, split, prepared)
    assert reading._has_raw_bytes_layout(source)  # pylint: disable=protected-access
    examples = [source[i] for i in range(len(source))]
    assert len(examples) == len(expected[split])
    by_colour = {colour_of(int(n[:6])): labels for n, labels in expected[split].items()}
    for example in examples:
      assert example["image"].shape == (size, size, 3) and example["image"].dtype == np.uint8
      mean = tuple(example["image"].reshape(-1, 3).mean(axis=0))
      (colour,) = [c for c in by_colour if np.abs(np.subtract(c, mean)).max() < 4]
      labels = by_colour.pop(colour)
      assert example["label"] == labels[attribute]
      assert {a: example[a] for a in celeba.ATTRIBUTES} == labels
    images, labels = reading.make_reader(source)(list(range(len(source))))
    assert images.shape == (len(source), size, size, 3)
    assert labels.tolist() == [e["label"] for e in examples]


def test_summary_counts_splits_attributes_and_skips(celeba_files, prepared):
  _, expected = celeba_files
  summary = data.prepare_and_summarize("celeba/25px_smiling", prepared, with_summary=True)
  assert summary["splits"] == {"test": 4, "train": 15, "validation": 5}
  assert summary["skipped"] == {celeba.SKIP_MISSING: 1, celeba.SKIP_CORRUPT: 1}
  for split in SPLITS:
    counts = summary["labels"][split]
    for attribute in celeba.ATTRIBUTES:
      positives = sum(labels[attribute] for labels in expected[split].values())
      assert counts[attribute] == {"no": len(expected[split]) - positives, "yes": positives}
    assert counts["label"]["Smiling"] == counts["Smiling"]["yes"]


def test_config_names_default_and_max_examples(celeba_files, tmp_path):
  assert data.get_builder("celeba", str(tmp_path)).builder_config.name == "64px_male"
  assert celeba.config_name(112, "Bushy_Eyebrows") == "112px_bushy_eyebrows"
  names = {c.name for c in celeba.Celeba.BUILDER_CONFIGS}
  assert len(names) == len(data.IMAGE_SIZES) * 40
  assert {celeba.config_name(64, a) for a in celeba.PAPER_ATTRIBUTES} <= names
  summary = data.prepare("celeba/25px_pale_skin", str(tmp_path), manual_dir=celeba_files[0],
                         max_examples=3)
  assert summary["splits"] == {"test": 3, "train": 3, "validation": 3}


def test_unknown_attributes_list_the_valid_ones():
  with pytest.raises(ValueError, match=r"Unknown CelebA attribute 'Smile'; valid .*'Smiling'"):
    celeba.config_name(64, "Smile")
  with pytest.raises(ValueError, match=r"Unknown config '64px_smile' .*'64px_smiling'"):
    data.parse_name("celeba/64px_smile")


def test_load_face_says_why_it_skips(tmp_path):
  path = tmp_path / "face.jpg"
  Image.new("RGB", (178, 218), (1, 2, 3)).save(path)
  image, skipped = celeba.load_face(path, 32)
  assert image.shape == (32, 32, 3) and skipped is None
  assert celeba.load_face(tmp_path / "absent.jpg", 32) == (None, celeba.SKIP_MISSING)
  path.write_bytes(path.read_bytes()[:200])
  assert celeba.load_face(path, 32) == (None, celeba.SKIP_CORRUPT)
  path.write_bytes(b"<html>quota exceeded</html>")
  assert celeba.load_face(path, 32) == (None, celeba.SKIP_CORRUPT)


def test_crop_square_rgb_takes_the_centred_square():
  image = Image.new("L", (10, 14), 0)
  image.paste(255, (0, 2, 10, 12))
  assert faces.crop_square_rgb(image, 10).min() == 255
  assert faces.crop_square_rgb(image, 5).shape == (5, 5, 3)


def _remove(path: str) -> None:
  """Deletes a file or a folder of files."""
  if os.path.isdir(path):
    for name in os.listdir(path):
      os.remove(os.path.join(path, name))
    os.rmdir(path)
  else:
    os.remove(path)


@pytest.mark.parametrize("change, manual_dir, message", [
    (None, "nowhere", r"manual_dir .*nowhere does not exist\. Expected CelebA as published: "
     r".*nowhere/img_align_celeba/000001\.jpg"),
    (None, "img_align_celeba", r"looks like the image folder itself: pass its parent"),
    (None, "..", r"has no img_align_celeba/\. Did you mean manual_dir=.*celeba\?"),
    ("list_attr_celeba.txt", ".", r"annotation file .*list_attr_celeba\.txt is missing"),
    ("list_eval_partition.txt", ".", r"annotation file .*list_eval_partition\.txt is missing"),
    ("img_align_celeba", ".", r"has no img_align_celeba/\. .*img_align_celeba/000001\.jpg"),
])
def test_bad_layouts_are_clear_errors(tmp_path, change, manual_dir, message):
  root = tmp_path / "celeba"
  write_celeba(str(root), num_rows=2)
  if change:
    _remove(str(root / change))
  with pytest.raises(FileNotFoundError, match=message):
    data.prepare("celeba/25px_male", str(tmp_path / "out"),
                 manual_dir=os.path.normpath(str(root / manual_dir)))


def _drop_last_value_of_line_3(text: str) -> str:
  lines = text.split("\n")
  lines[2] = lines[2].rsplit(" ", 1)[0]
  return "\n".join(lines)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace("Smiling", "Smile"), r"does not start with CelebA's header"),
    (_drop_last_value_of_line_3, r"line 3: expected an image name and 40 values"),
    (lambda t: "3" + t[1:], r"says it has 3 rows but has 2: a truncated"),
])
def test_malformed_attribute_files_are_clear_errors(tmp_path, edit, message):
  root = tmp_path / "celeba"
  write_celeba(str(root), num_rows=2)
  path = root / celeba.ATTRIBUTES_FILE
  path.write_text(edit(path.read_text()))
  with pytest.raises(ValueError, match=message):
    data.prepare("celeba/25px_male", str(tmp_path / "out"), manual_dir=str(root))


def test_malformed_partition_is_a_clear_error(tmp_path):
  root = tmp_path / "celeba"
  write_celeba(str(root), num_rows=2)
  (root / celeba.PARTITION_FILE).write_text("000001.jpg 0\r\n000002.jpg train\r\n")
  with pytest.raises(ValueError, match=re.escape("line 2 is '000002.jpg train'; expected")):
    data.prepare("celeba/25px_male", str(tmp_path / "out"), manual_dir=str(root))
