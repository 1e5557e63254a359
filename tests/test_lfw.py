"""Tests of the `lfw` builder on a fixture in LFW's published layout."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from dfm import data
from dfm.data import lfw
from prepared import SPLITS, read_all, text, write_and_prepare

# Kumar et al.'s 73 attribute names, in their header's order.
ATTRIBUTE_NAMES = [
    "Male", "Asian", "White", "Black", "Baby", "Child", "Youth", "Middle Aged", "Senior",
    "Black Hair", "Blond Hair", "Brown Hair", "Bald", "No Eyewear", "Eyeglasses", "Sunglasses",
    "Mustache", "Smiling", "Frowning", "Chubby", "Blurry", "Harsh Lighting", "Flash",
    "Soft Lighting", "Outdoor", "Curly Hair", "Wavy Hair", "Straight Hair", "Receding Hairline",
    "Bangs", "Sideburns", "Fully Visible Forehead", "Partially Visible Forehead",
    "Obstructed Forehead", "Bushy Eyebrows", "Arched Eyebrows", "Narrow Eyes", "Eyes Open",
    "Big Nose", "Pointy Nose", "Big Lips", "Mouth Closed", "Mouth Slightly Open",
    "Mouth Wide Open", "Teeth Not Visible", "No Beard", "Goatee", "Round Jaw", "Double Chin",
    "Wearing Hat", "Oval Face", "Square Face", "Round Face", "Color Photo", "Posed Photo",
    "Attractive Man", "Attractive Woman", "Indian", "Gray Hair", "Bags Under Eyes",
    "Heavy Makeup", "Rosy Cheeks", "Shiny Skin", "Pale Skin", "5 o' Clock Shadow",
    "Strong Nose-Mouth Lines", "Wearing Lipstick", "Flushed Face", "High Cheekbones",
    "Brown Eyes", "Wearing Earrings", "Wearing Necktie", "Wearing Necklace",
]
# Person (as in the attribute file), number of listed images, whether male.
PEOPLE = [("Aaron Eckhart", 5, True), ("Ana Maria Lopez", 4, False), ("George Clooney", 6, True),
          ("Li Na", 4, False), ("Jean Claude Van Damme", 5, True), ("Mary Jo White", 4, False),
          ("Tom Hanks", 4, True)]
ABSENT = ("Li Na", 3)  # Listed in the attribute file, no image on disk.
CORRUPT = ("Tom Hanks", 2)  # On disk, not a JPEG.
SIDE = 40  # Fixture images are small (LFW's are 250x250): the crop is their central 20x20.


def write_lfw(root, *, folder: str = "lfw", with_attributes: bool = True) -> dict:
  """Writes LFW's published layout under `root`; returns `{(disk name, num): values}`."""
  rng = np.random.default_rng(0)
  truth = {}
  lines = ["# 2", "\t".join(["#", "person", "imagenum", *ATTRIBUTE_NAMES])]
  for person, count, male in PEOPLE:
    on_disk = person.replace(" ", "_")
    os.makedirs(root / folder / on_disk)
    for num in range(1, count + 1):
      values = np.round(rng.normal(size=len(ATTRIBUTE_NAMES)), 3)
      values[0] = abs(values[0]) + 0.5 if male else -abs(values[0]) - 0.5
      values[1] = 0.0  # Exactly 0 is not positive.
      lines.append("\t".join([person, str(num), *(f"{v:g}" for v in values)]))
      truth[(on_disk, num)] = values
      path = root / folder / on_disk / f"{on_disk}_{num:04d}.jpg"
      if (person, num) == ABSENT:
        continue
      if (person, num) == CORRUPT:
        path.write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
        continue
      pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(path, quality=95)
  if with_attributes:
    (root / lfw.ATTRIBUTES_FILE).write_text("\n".join(lines) + "\n")
  return truth


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  """(manual_dir, data_dir, truth) with `25px_male_random`, `25px_smiling_identity` prepared."""
  return write_and_prepare(
      tmp_path_factory, write_lfw, ("lfw/25px_male_random", "lfw/25px_smiling_identity"))


def person_of(example: dict) -> str:
  return text(example["person"])


def test_header_gives_73_attributes_and_the_paper_ones_at_their_columns(fixture):
  manual_dir, data_dir, _ = fixture
  names, rows = lfw.read_attributes(os.path.join(manual_dir, lfw.ATTRIBUTES_FILE))
  rows = list(rows)
  assert names == ATTRIBUTE_NAMES and len(set(names)) == 73
  assert len(rows) == sum(count for _, count, _ in PEOPLE)
  assert {row.attributes.shape for row in rows} == {(73,)}
  # Male, Smiling, Bushy Eyebrows, Pale Skin, Wearing Lipstick in Kumar et al.'s order.
  assert [lfw.attribute_index(names, a) for a in lfw.PAPER_ATTRIBUTES] == [0, 17, 34, 63, 66]
  stored = sum(read_all("lfw/25px_male_random", data_dir).values(), [])
  assert {e["attributes"].shape for e in stored} == {(73,)}


@pytest.mark.parametrize("name, column", [("lfw/25px_male_random", "Male"),
                                          ("lfw/25px_smiling_identity", "Smiling")])
def test_labels_and_attributes_are_binarised_intensities(fixture, name, column):
  manual_dir, data_dir, truth = fixture
  examples = sum(read_all(name, data_dir).values(), [])
  keys = sorted((person_of(e), int(e["imagenum"])) for e in examples)
  skipped = {(ABSENT[0].replace(" ", "_"), ABSENT[1]), (CORRUPT[0].replace(" ", "_"), CORRUPT[1])}
  assert keys == sorted(set(truth) - skipped)
  for e in examples:
    values = truth[(person_of(e), int(e["imagenum"]))]
    assert e["label"] == int(values[ATTRIBUTE_NAMES.index(column)] > 0)
    assert e["attributes"].tolist() == (values > 0).astype(int).tolist()
    assert e["attributes"][1] == 0  # Intensity exactly 0.
  e = examples[0]
  person = person_of(e)
  path = os.path.join(manual_dir, "lfw", person, f"{person}_{int(e['imagenum']):04d}.jpg")
  assert e["image"].shape == (25, 25, 3) and e["image"].dtype == np.uint8
  np.testing.assert_array_equal(e["image"], lfw.load_face(path, 25))


def test_random_protocol_splits_each_class_60_20_20(fixture):
  _, data_dir, _ = fixture
  splits = read_all("lfw/25px_male_random", data_dir)
  men = [sum(e["label"] for e in splits[s]) for s in SPLITS]
  women = [len(splits[s]) - m for s, m in zip(SPLITS, men)]
  # 20 men and 11 women on disk split 12/4/4 and 7/2/2; the corrupt JPEG (a man) is then dropped.
  assert men == [12, 4, 3] and women == [7, 2, 2]
  batch = next(data.iterate_eval_batches(data.open_split("lfw/25px_male_random", "train",
                                                         data_dir), batch_size=8))
  assert batch["image"].shape == (8, 25, 25, 3) and batch["image"].max() <= 1


def test_identity_protocol_puts_each_person_in_one_split(fixture):
  _, data_dir, _ = fixture
  splits = read_all("lfw/25px_smiling_identity", data_dir)
  persons = {s: {person_of(e) for e in splits[s]} for s in SPLITS}
  assert all(persons[s] for s in SPLITS)
  assert not (persons["train"] & persons["validation"] or persons["train"] & persons["test"]
              or persons["validation"] & persons["test"])
  assert len(set.union(*persons.values())) == len(PEOPLE)


def test_summary_counts_splits_labels_skips_and_names_the_protocol(fixture):
  _, data_dir, _ = fixture
  summary = data.prepare_and_summarize("lfw/25px_male_random", data_dir, with_summary=True)
  assert summary["splits"] == {"test": 5, "train": 19, "validation": 6}
  assert summary["labels"]["train"]["label"] == {"woman": 7, "man": 12}
  assert summary["skipped"] == {lfw.SKIP_ABSENT: 1, lfw.SKIP_CORRUPT: 1}
  assert summary["protocol"] == "random"
  for name, protocol in [("lfw/25px_male_random", "random"),
                         ("lfw/25px_smiling_identity", "identity")]:
    metadata = data.get_builder(name, data_dir).info.metadata
    assert metadata["protocol"] == protocol and metadata["attribute_names"] == ATTRIBUTE_NAMES


def test_deep_funneled_folder_and_any_attribute(tmp_path):
  write_lfw(tmp_path / "manual", folder="lfw-deepfunneled")
  config = lfw.LfwConfig(name="25px_wearing_hat_random", size=25, attribute="Wearing Hat")
  builder = lfw.Lfw(config=config, data_dir=str(tmp_path / "data"),
                    file_format=data.preparation.FILE_FORMAT)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(tmp_path / "manual"), max_examples_per_split=2))
  assert builder.info.splits["train"].num_examples == 2


def test_attribute_file_quirks_crlf_and_comment():
  names = lfw.read_header(["# 2\r\n", "#\tperson\timagenum\tMale\tBushy Eyebrows\r\n"])
  assert names == ["Male", "Bushy Eyebrows"]
  assert lfw.slug("Bushy Eyebrows") == "bushy_eyebrows"
  assert "64px_pale_skin_identity" in [c.name for c in lfw.Lfw.BUILDER_CONFIGS]


def _prepare(tmp_path, manual_dir, config="25px_male_random"):
  data.prepare(f"lfw/{config}", str(tmp_path / "data"), manual_dir=str(manual_dir))


def test_wrong_manual_dir_names_the_expected_layout(tmp_path):
  (tmp_path / "elsewhere").mkdir()
  (tmp_path / "elsewhere" / "notes.txt").write_text("hi")
  with pytest.raises(FileNotFoundError, match="Expected MANUAL_DIR/lfw/Aaron_Eckhart/Aaron_"
                     "Eckhart_0001.jpg"):
    _prepare(tmp_path, tmp_path / "elsewhere")
  write_lfw(tmp_path / "manual")
  with pytest.raises(FileNotFoundError, match="looks like the image folder itself"):
    _prepare(tmp_path, tmp_path / "manual" / "lfw")
  with pytest.raises(FileNotFoundError, match="does not exist or is empty"):
    _prepare(tmp_path, tmp_path / "absent")
  (tmp_path / "manual" / "lfw-deepfunneled").mkdir()
  with pytest.raises(ValueError, match="holds both lfw/ and lfw-deepfunneled/"):
    _prepare(tmp_path, tmp_path / "manual")


def test_missing_attribute_file_is_named(tmp_path):
  write_lfw(tmp_path, with_attributes=False)
  with pytest.raises(FileNotFoundError, match=f"{lfw.ATTRIBUTES_FILE} is missing from"):
    _prepare(tmp_path, tmp_path)


def test_unknown_attribute_lists_the_valid_ones(tmp_path):
  write_lfw(tmp_path / "manual")
  config = lfw.LfwConfig(name="25px_beard_random", size=25, attribute="Beard")
  builder = lfw.Lfw(config=config, data_dir=str(tmp_path / "data"))
  with pytest.raises(ValueError, match=r"'Beard' is not in .* valid attributes: \['Male', 'Asian'"):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(tmp_path / "manual")))
  with pytest.raises(ValueError, match="Unknown config '25px_beard_random'"):
    data.prepare("lfw/25px_beard_random", str(tmp_path / "data"))


def test_malformed_row_names_its_line(tmp_path):
  write_lfw(tmp_path)
  path = tmp_path / lfw.ATTRIBUTES_FILE
  path.write_text(path.read_text() + "Tom Hanks\t9\t1.0\n")
  with pytest.raises(ValueError, match=r"line 35: 3 fields, expected 75"):
    _prepare(tmp_path, tmp_path)
