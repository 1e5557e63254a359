"""A run's report on made-up scores: scores.png, noise.png, PSNR of N = 0, SSIM settings."""
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from skimage.metrics import structural_similarity

from dfm.report import document, figures, metrics
from dfm.report.scores import Scores
from dfm.run import results
from dfm.transform import TRANSFORMS


def _scores(num_classes: int, count: int = 60, seed: int = 0) -> Scores:
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % num_classes
  probabilities = rng.dirichlet(np.ones(num_classes), count).astype(np.float32)
  return Scores(labels, probabilities, squared_error_sum=0.0, num_values=count * 28 * 28)


def _colour_bars(figure) -> list:
  return [axis for axis in figure.axes if axis.get_label() == "<colorbar>"]


@pytest.mark.parametrize("num_classes, grid", [(2, (1, 2)), (10, (2, 5)), (7, (2, 5))])
def test_scores_figure_has_one_panel_per_class_and_one_legend(num_classes, grid, tmp_path):
  names = [f"class {c}" for c in range(num_classes)]
  figure = figures.scores_figure(_scores(num_classes), _scores(num_classes, seed=1), names)
  panels = [axis for axis in figure.axes if axis.get_visible()]
  assert len(figure.axes) == grid[0] * grid[1] and len(panels) == num_classes
  assert all(axis.get_shared_x_axes().joined(panels[0], axis) for axis in panels)
  assert all(axis.get_shared_y_axes().joined(panels[0], axis) for axis in panels)
  assert len(figure.legends) == 1 and not any(axis.get_legend() for axis in panels)
  assert [t.get_text() for t in figure.legends[0].get_texts()] == ["before", "after"]
  assert panels[-1].get_title().startswith(f"class {num_classes - 1} (n ")
  # Before and after, each one patch of SCORE_BINS bars.
  assert [len(patch.get_data().values) for patch in panels[0].patches] == [
      2 * figures.SCORE_BINS - 1] * 2
  plt.close(figure)
  figures.plot_scores(_scores(num_classes), _scores(num_classes), names, tmp_path / "scores.png")
  assert (tmp_path / "scores.png").stat().st_size > 1000


def test_transform_meanings_cover_every_transform():
  assert set(figures.TRANSFORM_MEANINGS) == set(TRANSFORMS)
  assert figures.noise_title("tanh") == (
      "Noise N, added in arctanh space\nZ = (tanh(atanh(2X - 1) + N) + 1) / 2")


@pytest.mark.parametrize("noise, image_shape, transform, panels, shown_shape", [
    (np.linspace(-0.3, 0.2, 28 * 28).reshape(28, 28, 1), None, "tanh", 1, (28, 28)),
    (np.full((25, 25, 3), 0.1), None, "additive_clip", 4, (25, 25)),  # RGB image + R, G, B
    (np.ones((7, 7, 1)), (28, 28, 1), "paper_literal", 1, (28, 28)),  # coarse: resized up
    ({"coarse": np.ones((7, 7, 1)), "fine": np.zeros((28, 28, 1))}, None, "tanh", 1, (28, 28)),
    (np.zeros((28, 28, 1)), None, "tanh", 1, (28, 28)),  # N = 0: still a scale
])
def test_noise_figure_has_a_colour_bar_and_says_what_the_transform_does(
    noise, image_shape, transform, panels, shown_shape, tmp_path):
  figure = figures.noise_figure(noise, transform=transform, image_shape=image_shape)
  bars = _colour_bars(figure)
  assert len(bars) == 1 and bars[0].get_ylabel().startswith("N: min ")
  assert len(figure.axes) == panels + 1
  assert figure._suptitle.get_text() == figures.noise_title(transform)
  assert figures.TRANSFORM_MEANINGS[transform][1] in figure._suptitle.get_text()
  assert figure.axes[panels - 1].get_images()[0].get_array().shape == shown_shape
  plt.close(figure)
  figures.save_noise_png(noise, tmp_path / "noise.png", transform=transform,
                         image_shape=image_shape)
  assert (tmp_path / "noise.png").stat().st_size > 1000


def test_a_coarse_or_multi_scale_noise_is_shown_at_the_image_size():
  assert figures.noise_image(np.ones((7, 7, 1)), (28, 28, 1)).shape == (28, 28, 1)
  both = figures.noise_image({"coarse": np.ones((7, 7, 1)), "fine": np.ones((28, 28, 1))})
  np.testing.assert_allclose(both, 2.0)
  def shifted(images, noise):
    return images + noise

  figure = figures.noise_figure(np.ones((7, 7, 1)), transform=shifted)
  assert figure._suptitle.get_text() == "Noise N, applied by shifted\nZ = shifted(X, N)"
  plt.close(figure)


def test_a_psnr_only_float_rounding_reaches_reads_identical():
  assert metrics.is_identical(math.inf) and metrics.is_identical(153.12)
  assert metrics.is_identical(metrics.IDENTICAL_PSNR_DB)
  assert not metrics.is_identical(99.9) and not metrics.is_identical(math.nan)
  assert metrics.format_psnr(153.12) == metrics.format_psnr(math.inf) == "identical (N = 0)"
  assert metrics.format_psnr(23.61) == "23.6 dB"
  assert metrics.format_psnr(23.612, digits=2, unit="") == "23.61"


def _summary(psnr: float | None) -> dict:
  after = {"accuracy": 0.75} if psnr is None else {"accuracy": 0.75, "psnr_db": psnr}
  return {"method": "query_dft", "dataset": "uci_digits", "before": {"accuracy": 0.75},
          "after": after, "val": {"before": {"accuracy": 0.7}, "after": {"accuracy": 0.7}}}


@pytest.mark.parametrize("psnr, expected", [
    (153.12, "(+0.0 points), perturbed images identical (N = 0); val"),
    (math.inf, "(+0.0 points), perturbed images identical (N = 0); val"),
    (23.61, "(+0.0 points) at PSNR 23.6 dB; val"),
    (None, "(+0.0 points); val"),
])
def test_the_printed_line_says_identical_for_n_0(psnr, expected, capsys, tmp_path):
  results._print_summary(_summary(psnr), tmp_path)
  line = capsys.readouterr().out.split(" Outputs: ")[0]  # Not the tmp path's digits.
  assert line.startswith("Query-only DFT on uci_digits test: accuracy 75.0% -> 75.0% ")
  assert expected in line and ("153" not in line and "inf" not in line)


def _report(tmp_path, psnr: float, image_shape=(28, 28, 1)) -> str:
  before, after = _scores(10), _scores(10, seed=1)
  images = np.zeros((0, *image_shape), np.float32)
  samples = figures.Samples(images, images, *(np.zeros(0, int),) * 3)
  appearance = {"psnr_db": psnr, "ssim": 1.0, "ssim_images": 60,
                "ssim_settings": metrics.describe_ssim(image_shape)}
  document.write_report(tmp_path, title="DFT on made-up", class_names=list("0123456789"),
                        before=before, after=after, samples=samples, appearance=appearance,
                        has_noise=True)
  return (tmp_path / "report.md").read_text()


def test_report_tables_identical_psnr_and_names_the_ssim_settings(tmp_path):
  report = _report(tmp_path, 153.12)
  assert "| PSNR (dB), image vs perturbed | | identical (N = 0) |" in report
  assert "153" not in report and "PSNR >= 100 dB" in report
  assert "SSIM as in Wang et al. (2004): 11x11 Gaussian window, sigma 1.5" in report
  assert "use_sample_covariance=False" in report
  for name in ("roc.png", "scores.png"):
    assert (tmp_path / name).stat().st_size > 1000
  report = _report(tmp_path, 23.612)
  assert "| PSNR (dB), image vs perturbed | | 23.61 |" in report
  assert "identical" not in report


def _pair(shape, seed=0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  images = rng.random((2, *shape)).astype(np.float32)
  return images, np.clip(images + 0.1 * rng.standard_normal(images.shape), 0, 1).astype(np.float32)


@pytest.mark.parametrize("shape", [(28, 28, 1), (25, 25, 3)])
def test_ssim_is_wang_et_al_gaussian_11x11(shape):
  images, perturbed = _pair(shape)
  wang = np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
                  for a, b in zip(images, perturbed)])
  old = np.mean([structural_similarity(a, b, data_range=1.0, channel_axis=-1)
                 for a, b in zip(images, perturbed)])
  assert metrics.mean_ssim(images, perturbed) == pytest.approx(wang, abs=1e-12)
  assert abs(metrics.mean_ssim(images, perturbed) - old) > 1e-3
  assert metrics.mean_ssim(images, images) == pytest.approx(1.0)
  assert "win_size" not in metrics.ssim_options(shape)


def test_ssim_of_images_smaller_than_the_window():
  images, perturbed = _pair((8, 8, 1))
  assert metrics.ssim_options((8, 8, 1))["win_size"] == 7
  assert metrics.ssim_options((10, 9, 1))["win_size"] == 9
  assert 0 < metrics.mean_ssim(images, perturbed) < 1
  assert "images of 8 px" in metrics.describe_ssim((8, 8, 1))
