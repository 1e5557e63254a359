"""Tests of the `muct` builder on a fixture in MUCT's published layout, with real faces.

The faces are scikit-image's real LFW crops (`lfw_subset()` rows 0-99, 25x25 gray),
each upscaled to 100x100 and pasted on a mid-gray 240x320 (portrait, like MUCT's
480x640) canvas, where OpenCV's frontal-face cascade finds them.
"""

import os

import numpy as np
import pytest
from PIL import Image
from skimage.data import lfw_subset

from dfm import data
from dfm.data import muct
from prepared import SPLITS, read_all, text, write_and_prepare

WIDTH, HEIGHT, FACE = 240, 320, 100  # Canvas (MUCT's aspect) and the pasted face's side.
FACE_BOX = ((WIDTH - FACE) // 2, (HEIGHT - FACE) // 2, FACE, FACE)  # left, top, w, h.
# Subject, gender tag: three women and three men, publishable or not.
SUBJECTS = [(0, "fn"), (1, "mn"), (2, "mg"), (200, "fg"), (3, "fn"), (401, "mn")]
VIEWS = ("qa", "qb", "rc", "se")  # Lighting letter then camera letter.
NO_FACE = ("i005qa-fn.jpg", "i006qd-mn.jpg")  # Plain gray; a non-face from rows 100-199.
CORRUPT = "i007qa-mg.jpg"


def canvas_with(pixels: np.ndarray | None) -> Image.Image:
  """A mid-gray 240x320 RGB canvas with `pixels` (gray in [0, 1]) at 100x100 in its centre."""
  canvas = Image.new("L", (WIDTH, HEIGHT), 128)
  if pixels is not None:
    face = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
    canvas.paste(face.resize((FACE, FACE), Image.BICUBIC), FACE_BOX[:2])
  return canvas.convert("RGB")


def write_muct(root, *, with_landmarks: bool = True) -> dict[str, int]:
  """Writes MUCT's published layout under `root`; returns `{face image name: label}`."""
  rows = lfw_subset()
  (root / muct.IMAGES_DIR).mkdir(parents=True)
  truth, row = {}, 0
  for subject, tag in SUBJECTS:
    for view in VIEWS:
      name = f"i{subject:03d}{view}-{tag}.jpg"
      canvas_with(rows[row]).save(root / muct.IMAGES_DIR / name, quality=95)
      truth[name] = int(tag[0] == "m")
      row += 1
  canvas_with(None).save(root / muct.IMAGES_DIR / NO_FACE[0], quality=95)
  canvas_with(rows[150]).save(root / muct.IMAGES_DIR / NO_FACE[1], quality=95)
  (root / muct.IMAGES_DIR / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
  (root / muct.IMAGES_DIR / "README.txt").write_text("Not an image: ignored.")
  if with_landmarks:
    (root / "muct-landmarks").mkdir()
    header = ",".join(["name", "tag"] + [f"{a}{i:02d}" for i in range(76) for a in "xy"])
    (root / muct.LANDMARKS_FILE).write_text(header + "\ni000qa-fn,0," + ",".join(["0"] * 152) + "\n")
  return truth


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
  """(manual_dir, data_dir, truth) with `muct/25px` and `muct/64px` prepared."""
  return write_and_prepare(tmp_path_factory, write_muct, ("muct/25px", "muct/64px"))


def name_of(example: dict) -> str:
  return text(example["file_name"])


def test_every_face_is_kept_with_its_gender_and_subject(fixture):
  _, data_dir, truth = fixture
  examples = sum(read_all("muct/25px", data_dir).values(), [])
  assert sorted(name_of(e) for e in examples) == sorted(truth)
  for e in examples:
    parsed = muct.parse_file_name(name_of(e))
    assert e["label"] == truth[name_of(e)] == parsed.label
    assert e["subject"] == parsed.subject


def test_split_is_60_20_20_per_gender(fixture):
  _, data_dir, _ = fixture
  splits = read_all("muct/25px", data_dir)
  men = [sum(e["label"] for e in splits[s]) for s in SPLITS]
  women = [len(splits[s]) - m for s, m in zip(SPLITS, men)]
  assert men == women == [7, 3, 2]  # 12 of each: round(7.2), round(9.6) - 7, the rest.
  batch = next(data.iterate_eval_batches(data.open_split("muct/64px", "train", data_dir),
                                         batch_size=8))
  assert batch["image"].shape == (8, 64, 64, 3) and 0 <= batch["image"].min()
  assert batch["image"].max() <= 1


def test_the_crop_is_the_detected_face_with_its_margin(fixture):
  manual_dir, data_dir, _ = fixture
  example = dict(data.open_split("muct/64px", "test", data_dir)[0])
  path = os.path.join(manual_dir, muct.IMAGES_DIR, name_of(example))
  box, skipped = muct.find_face(path)
  assert skipped is None
  left, top, width, height = box
  face_left, face_top, _, _ = FACE_BOX
  # The margin box holds the pasted face's centre and is about 1.4 times the detected face.
  assert left < face_left + FACE / 2 < left + width and top < face_top + FACE / 2 < top + height
  assert 0.8 * FACE < width / (1 + 2 * muct.MARGIN) < 1.2 * FACE
  assert example["image"].shape == (64, 64, 3) and example["image"].dtype == np.uint8
  np.testing.assert_array_equal(example["image"], muct.crop_face(path, box, 64))
  assert example["image"].std() > 20  # A face, not the uniform gray canvas.


def test_summary_counts_skipped_images(fixture):
  _, data_dir, _ = fixture
  summary = data.prepare_and_summarize("muct/25px", data_dir, with_summary=True)
  assert summary["splits"] == {"test": 4, "train": 14, "validation": 6}
  assert summary["labels"]["train"]["label"] == {"woman": 7, "man": 7}
  assert summary["skipped"] == {muct.SKIP_NO_FACE: 2, muct.SKIP_CORRUPT: 1}


def test_publishable_subjects_filter_figures(fixture):
  _, data_dir, _ = fixture
  assert muct.PUBLISHABLE_SUBJECTS == {0, 1, 2, 200, 201, 400, 401, 402}
  examples = sum(read_all("muct/25px", data_dir).values(), [])
  publishable = {int(e["subject"]) for e in examples if muct.is_publishable(e["subject"])}
  assert publishable == {0, 1, 2, 200, 401}
  metadata = data.get_builder("muct/25px", data_dir).info.metadata
  assert metadata["publishable_subjects"] == sorted(muct.PUBLISHABLE_SUBJECTS)


def test_file_names_parse():
  parsed = muct.parse_file_name("i402re-mg.jpg")
  assert (parsed.subject, parsed.view, parsed.label) == (402, "re", 1)
  assert muct.parse_file_name("i000qa-fn.jpg").label == 0
  assert [c.name for c in muct.Muct.BUILDER_CONFIGS] == [f"{s}px" for s in data.IMAGE_SIZES]


def _prepare(tmp_path, manual_dir):
  data.prepare("muct/25px", str(tmp_path / "data"), manual_dir=str(manual_dir))


def test_missing_landmark_file_is_named(tmp_path):
  write_muct(tmp_path, with_landmarks=False)
  with pytest.raises(FileNotFoundError, match="landmark file .*muct76-opencv.csv is missing"):
    _prepare(tmp_path, tmp_path)


def test_wrong_manual_dir_names_the_expected_layout(tmp_path):
  (tmp_path / "elsewhere").mkdir()
  (tmp_path / "elsewhere" / "notes.txt").write_text("hi")
  with pytest.raises(FileNotFoundError, match="has no jpg/.* Expected MUCT as published:"
                     " MANUAL_DIR/jpg/i000qa-fn.jpg"):
    _prepare(tmp_path, tmp_path / "elsewhere")
  write_muct(tmp_path / "manual")
  with pytest.raises(FileNotFoundError, match="looks like the image folder itself"):
    _prepare(tmp_path, tmp_path / "manual" / "jpg")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    _prepare(tmp_path, tmp_path / "absent")


def test_unparsable_file_name_names_the_file_and_pattern(tmp_path):
  (tmp_path / "jpg").mkdir()
  (tmp_path / "jpg" / "i00qa-fn.jpg").write_bytes(b"")
  (tmp_path / "muct-landmarks").mkdir()
  (tmp_path / muct.LANDMARKS_FILE).write_text("name,tag\n")
  with pytest.raises(ValueError, match=r"'i00qa-fn.jpg' does not parse: expected"
                     r" i<3-digit subject><2 letters>-<f\|m>"):
    _prepare(tmp_path, tmp_path)
  with pytest.raises(ValueError, match="'i000qa-xn.jpg' does not parse"):
    muct.parse_file_name("i000qa-xn.jpg")
