"""Tests of a user's own images as datasets: the `image_folder` and `npz` builders.

Small synthetic images (solid colours, written with Pillow) stand in for a user's
photos, so every stored pixel is known.
"""

import json
import os

import numpy as np
import pytest
from PIL import Image

from dfm import data
from dfm.data import image_folder
from dfm.data import npz
from dfm.data.splits import stratified_split
from prepared import SPLITS, read_all, run_prepare_command, text

COLORS = {"bird": (0, 160, 0), "cat": (200, 30, 30), "dog": (20, 40, 220)}
PER_CLASS = 5


def write_image(path, color: tuple[int, int, int], size=(60, 30)) -> None:
  """A `color` image whose centred square is `color` and whose side bands are not."""
  path.parent.mkdir(parents=True, exist_ok=True)
  image = Image.new("RGB", size, (255, 255, 255))
  side = min(size)
  left, top = (size[0] - side) // 2, (size[1] - side) // 2
  image.paste(Image.new("RGB", (side, side), color), (left, top))
  image.save(path)


def write_classes(root, names=COLORS, per_class: int = PER_CLASS) -> list[str]:
  """Writes `root/<class>/<i>.png|jpg`; returns the relative paths written."""
  paths = []
  for name in names:
    for i in range(per_class):
      path = f"{name}/{i}.{'png' if i % 2 else 'jpg'}"
      write_image(root / path, COLORS[name])
      paths.append(path)
  return paths


def gray_of(color: tuple[int, int, int]) -> int:
  return int(np.asarray(Image.new("RGB", (1, 1), color).convert("L"))[0, 0])


def split_names(name: str, data_dir: str) -> dict[str, set[str]]:
  return {s: {text(e["file_name"]) for e in examples}
          for s, examples in read_all(name, data_dir).items()}


@pytest.fixture(scope="module")
def classes(tmp_path_factory):
  """(manual_dir, data_dir, kept paths): class folders with a nested image, a hidden
  file, a text file and a corrupt JPEG, prepared at 28px_gray and 32px_rgb."""
  root = tmp_path_factory.mktemp("photos")
  kept = write_classes(root)
  write_image(root / "cat" / "more" / "5.bmp", COLORS["cat"])  # Nested: still a cat.
  kept.append(os.path.join("cat", "more", "5.bmp"))
  (root / "dog" / "notes.txt").write_text("not an image")
  (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a JPEG after all")
  (root / "bird" / ".DS_Store").write_bytes(b"\0")  # Hidden: ignored, not counted.
  (root / "README.md").write_text("beside the class folders: not an example")
  data_dir = str(tmp_path_factory.mktemp("data"))
  for config in ("28px_gray", "32px_rgb"):
    data.prepare(f"image_folder/{config}", data_dir, manual_dir=str(root))
  return str(root), data_dir, sorted(kept)


def test_configs_name_size_and_color():
  names = [c.name for c in data.ImageFolder.BUILDER_CONFIGS]
  assert names[:4] == ["25px_gray", "25px_rgb", "28px_gray", "28px_rgb"]
  assert {"32px_rgb", "64px_gray", "96px_rgb", "224px_rgb"} <= set(names)
  assert names == [c.name for c in data.Npz.BUILDER_CONFIGS]
  assert data.get_builder("image_folder", "unused").builder_config.name == "32px_rgb"


def test_gray_and_rgb_store_the_centred_square_at_their_shape(classes):
  _, data_dir, _ = classes
  for name, shape in (("image_folder/28px_gray", (28, 28, 1)),
                      ("image_folder/32px_rgb", (32, 32, 3))):
    source = data.open_split(name, "train", data_dir)
    names = data.class_names_of(source)
    for example in source:
      color = COLORS[names[example["label"]]]
      expected = color if shape[-1] == 3 else (gray_of(color),)
      assert example["image"].shape == shape and example["image"].dtype == np.uint8
      # Solid, up to JPEG's error: the white side bands were cropped away.
      np.testing.assert_allclose(example["image"].reshape(-1, shape[-1]).mean(0), expected,
                                 atol=8)
    batch = next(data.iterate_eval_batches(source, batch_size=4))
    assert batch["image"].shape == (4, *shape) and batch["image"].max() <= 1


def test_class_names_are_the_sorted_folder_names(classes):
  manual_dir, data_dir, _ = classes
  source = data.open_split("image_folder/32px_rgb", "test", data_dir)
  assert data.class_names_of(source) == sorted(COLORS)
  for example in source:
    assert text(example["file_name"]).split(os.sep)[0] == sorted(COLORS)[example["label"]]
  assert data.get_builder("image_folder/32px_rgb", data_dir).info.metadata["source"]["path"] == (
      manual_dir)


def test_split_is_stratified_seeded_and_the_same_for_every_config(classes):
  _, data_dir, kept = classes
  labels = np.array([sorted(COLORS).index(path.split(os.sep)[0]) for path in kept])
  expected = {s: {kept[i] for i in indices} for s, indices in stratified_split(labels).items()}
  assert split_names("image_folder/28px_gray", data_dir) == expected
  assert split_names("image_folder/32px_rgb", data_dir) == expected
  assert [len(expected[s]) for s in SPLITS] == [10, 3, 3]  # Per class 3/1/1 (cat 4/1/1).


def test_summary_counts_the_skipped_files(classes, capsys):
  manual_dir, data_dir, _ = classes
  run_prepare_command("--dataset=image_folder/28px_gray", f"--manual_dir={manual_dir}",
                      f"--data_dir={data_dir}", "--summary")
  summary = json.loads(capsys.readouterr().out)
  assert summary["built"] is False
  assert summary["skipped"] == {image_folder.SKIP_NOT_IMAGE: 1, image_folder.SKIP_CORRUPT: 1}
  assert summary["labels"]["train"]["label"] == {"bird": 3, "cat": 4, "dog": 3}


def test_split_folders_are_kept_as_given(tmp_path):
  given = {"train": 3, "val": 2, "test": 1}  # `val`, as torchvision's ImageNet has it.
  for folder, count in given.items():
    write_classes(tmp_path / "manual" / folder, names=("cat", "dog"), per_class=count)
  data_dir = str(tmp_path / "data")
  data.prepare("image_folder/25px_rgb", data_dir, manual_dir=str(tmp_path / "manual"))
  names = split_names("image_folder/25px_rgb", data_dir)
  for folder, split in (("train", "train"), ("val", "validation"), ("test", "test")):
    assert {p.split(os.sep)[0] for p in names[split]} == {folder}
    assert len(names[split]) == 2 * given[folder]


def write_csv(root, rows: list[str]) -> None:
  (root / image_folder.CSV_FILE).write_text("\n".join(rows) + "\n")


def test_csv_with_a_split_column_keeps_its_splits_and_numeric_labels(tmp_path):
  manual = tmp_path / "manual"
  rows = ["path,label,split"]
  for i in range(6):
    label, split = ("2", "10")[i % 2], SPLITS[i % 3]
    write_image(manual / "images" / f"{i}.png", COLORS["cat" if label == "2" else "dog"])
    rows.append(f"images/{i}.png,{label},{split}")
  rows.append("images/absent.png,2,train")
  write_csv(manual, rows)
  data_dir = str(tmp_path / "data")
  summary = data.prepare_and_summarize("image_folder/28px_rgb", data_dir,
                                       manual_dir=str(manual), with_summary=True)
  assert summary["skipped"] == {image_folder.SKIP_ABSENT: 1}
  assert summary["labels"]["train"]["label"] == {"2": 1, "10": 1}  # Numeric order.
  for split, examples in read_all("image_folder/28px_rgb", data_dir).items():
    rows_of_split = [int(text(e["file_name"])[len("images/"):-4]) for e in examples]
    assert all(SPLITS[i % 3] == split for i in rows_of_split)


def test_csv_without_a_split_column_is_split_per_class(tmp_path):
  manual = tmp_path / "manual"
  paths = write_classes(manual / "pics")
  write_csv(manual, ["label,path"] + [f"{path.split('/')[0]},pics/{path}" for path in paths])
  data_dir = str(tmp_path / "data")
  summary = data.prepare_and_summarize("image_folder/28px_gray", data_dir,
                                       manual_dir=str(manual), with_summary=True)
  assert summary["splits"] == {"test": 3, "train": 9, "validation": 3}
  assert summary["labels"]["test"]["label"] == {name: 1 for name in sorted(COLORS)}


def test_a_different_folder_is_refused_and_the_same_reused(tmp_path):
  write_classes(tmp_path / "a", names=("cat", "dog"), per_class=3)
  write_classes(tmp_path / "b", names=("bird", "dog"), per_class=3)
  data_dir = str(tmp_path / "data")
  first = data.prepare("image_folder/25px_gray", data_dir, manual_dir=str(tmp_path / "a"))
  again = data.prepare("image_folder/25px_gray", data_dir, manual_dir=str(tmp_path / "a"))
  assert first["built"] and not again["built"]
  assert first["splits"] == {"test": 2, "train": 4}  # 3 per class: 2/0/1, no validation.
  assert not data.prepare("image_folder/25px_gray", data_dir)["built"]  # No folder: reused.
  refused = rf"prepared from {tmp_path / 'a'} .* not from {tmp_path / 'b'} .* its own --data_dir"
  for config in ("25px_gray", "28px_rgb"):  # That config, or another one, from folder b.
    with pytest.raises(ValueError, match=refused):
      data.prepare(f"image_folder/{config}", data_dir, manual_dir=str(tmp_path / "b"))
  write_image(tmp_path / "a" / "cat" / "new.png", COLORS["cat"])
  with pytest.raises(ValueError, match=r"\(it changed since\)"):
    data.prepare("image_folder/25px_gray", data_dir, manual_dir=str(tmp_path / "a"))
  data.prepare("image_folder/25px_gray", str(tmp_path / "b_data"), manual_dir=str(tmp_path / "b"))


def _prepare_folder(tmp_path, manual) -> None:
  data.prepare("image_folder/25px_gray", str(tmp_path / "data"), manual_dir=str(manual))


@pytest.mark.parametrize("layout, message", [
    ({}, "is empty"),
    ({"loose.png": "image"}, "holds files but no class folders"),
    ({"cat/0.png": "image", "dog/0.png": "junk", "dog/a.txt": "text"},
     r"No readable image in class\(es\) \['dog'\] .*\{'dog': 2\}"),
    ({"cat/0.png": "image", "empty/": None}, r"\['empty'\]"),
    ({"train/cat/0.png": "image", "dog/0.png": "image"},
     r"mixes split folders \['train'\] with other folders \['dog'\]"),
    ({"labels.csv": "file,label\na.png,cat\n"}, "has no path column .*path,label,split"),
    ({"labels.csv": "path,label,split\na.png,cat,dev\n"}, "line 2: unknown split 'dev'"),
    ({"labels.csv": "path,label\n"}, "lists no image"),
])
def test_bad_folders_are_named_with_the_fix(tmp_path, layout, message):
  manual = tmp_path / "manual"
  manual.mkdir()
  for path, content in layout.items():
    if content is None:
      (manual / path).mkdir(parents=True)
    elif content == "image":
      write_image(manual / path, COLORS["cat"])
    else:
      (manual / path).parent.mkdir(parents=True, exist_ok=True)
      (manual / path).write_text(content)
  with pytest.raises(ValueError, match=message):
    _prepare_folder(tmp_path, manual)


def test_absent_folder_and_data_dir_inside_it_are_refused(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist: pass --manual_dir"):
    _prepare_folder(tmp_path, tmp_path / "absent")
  write_classes(tmp_path / "manual", names=("cat",), per_class=1)
  with pytest.raises(ValueError, match="is inside the source"):
    data.prepare("image_folder/25px_gray", str(tmp_path / "manual" / "prepared"),
                 manual_dir=str(tmp_path / "manual"))


# --- npz ---------------------------------------------------------------------------------


def digits(num: int = 10, size: int = 28, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """`num` random uint8 images and labels alternating 0, 1."""
  rng = np.random.default_rng(0)
  return (rng.integers(0, 256, (num, size, size, channels), dtype=np.uint8),
          np.arange(num) % 2)


@pytest.mark.parametrize("as_float", [False, True])
def test_npz_round_trips_uint8_and_float_images(tmp_path, as_float):
  image, label = digits()
  stored = image / 255 if as_float else image
  np.savez(tmp_path / "digits.npz", image=stored, label=label,
           class_names=np.array(["even", "odd"]))
  data_dir = str(tmp_path / "data")
  data.prepare("npz/28px_gray", data_dir, manual_dir=str(tmp_path / "digits.npz"))
  examples = sum(read_all("npz/28px_gray", data_dir).values(), [])
  assert sorted(e["index"] for e in examples) == list(range(10))
  for e in examples:
    np.testing.assert_array_equal(e["image"], image[e["index"]])
    assert e["label"] == label[e["index"]]
  source = data.open_split("npz/28px_gray", "train", data_dir)
  assert data.class_names_of(source) == ["even", "odd"]


def test_npz_keeps_given_splits_and_converts_gray_to_rgb(tmp_path):
  image, label = digits(num=6, size=32)
  split = np.array(["train", "train", "val", "test", "train", "validation"])
  (tmp_path / "manual").mkdir()
  np.savez(tmp_path / "manual" / "mine.npz", image=image, label=label, split=split)
  data_dir = str(tmp_path / "data")
  result = data.prepare("npz/32px_rgb", data_dir, manual_dir=str(tmp_path / "manual"))
  assert result["splits"] == {"test": 1, "train": 3, "validation": 2}
  splits = read_all("npz/32px_rgb", data_dir)
  assert sorted(e["index"] for e in splits["validation"]) == [2, 5]
  example = splits["test"][0]
  np.testing.assert_array_equal(example["image"], np.repeat(image[3], 3, axis=-1))
  assert data.class_names_of(data.open_split("npz/32px_rgb", "test", data_dir)) == ["0", "1"]


def _arrays(**changes) -> dict:
  image, label = digits(num=5)
  return {"image": image, "label": label, **changes}


@pytest.mark.parametrize("arrays, message", [
    (_arrays(image=np.zeros((5, 28, 28), np.uint8)),
     r"image has shape \(5, 28, 28\).*image\[\.\.\., None\]"),
    (_arrays(image=np.zeros((5, 8, 8, 2), np.uint8)), "C 1 \\(gray\\) or 3 \\(RGB\\)"),
    (_arrays(image=np.full((5, 8, 8, 1), 255.0)),
     r"values in \[255.0, 255.0\]; floats must lie in \[0, 1\]"),
    (_arrays(image=np.full((5, 8, 8, 1), np.nan)), r"floats must lie in \[0, 1\]"),
    (_arrays(image=np.zeros((5, 8, 8, 1), np.int64)), "dtype int64; store uint8"),
    (_arrays(label=np.arange(6)), "label has 6 entries but image has 5 images"),
    (_arrays(label=np.arange(5) * 0.5), "label has dtype float64; labels must be integer"),
    (_arrays(label=np.arange(5) - 1), "label holds -1"),
    (_arrays(split=np.array(["train"] * 4)), "split has 4 entries but image has 5"),
    (_arrays(split=np.array(["train"] * 4 + ["dev"])), "array split: unknown split 'dev'"),
    (_arrays(class_names=np.array(["a"])), "class_names has 1 names .* label goes up to 1"),
    (_arrays(class_names=np.array(["a", "b"], dtype=object)), "Store split and class_names as"),
    ({"image": digits(num=5)[0]}, "has no 'label' array"),
])
def test_npz_bad_arrays_are_refused_naming_the_array(tmp_path, arrays, message):
  np.savez(tmp_path / "bad.npz", **arrays)
  with pytest.raises(ValueError, match=message):
    npz.load_arrays(str(tmp_path / "bad.npz"))


def test_npz_errors_reach_prepare_and_the_file_is_found(tmp_path):
  np.savez(tmp_path / "bad.npz", **_arrays(label=np.arange(4)))
  with pytest.raises(ValueError, match="label has 4 entries"):
    data.prepare("npz/28px_gray", str(tmp_path / "data"), manual_dir=str(tmp_path))
  np.savez(tmp_path / "second.npz", **_arrays())
  with pytest.raises(FileNotFoundError, match=r"holds \['bad.npz', 'second.npz'\]"):
    data.prepare("npz/28px_gray", str(tmp_path / "data"), manual_dir=str(tmp_path))
  (tmp_path / "not.npz").write_text("hello")
  with pytest.raises(ValueError, match="is not a readable .npz file"):
    npz.load_arrays(str(tmp_path / "not.npz"))
