"""movenerf.tools.image_metrics: scores equal independent computations; pairing by name;
one-line errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from movenerf.evaluation import lpips as lp
from movenerf.tools import image_metrics as im
from movenerf.validation import UsageError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _image(seed, h=40, w=48):
  rng = np.random.default_rng(seed)
  small = (rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8)
  return np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))


def _noisy(img, seed):
  rng = np.random.default_rng(seed)
  return np.clip(img.astype(np.int32) + rng.integers(-20, 21, img.shape), 0, 255).astype(
      np.uint8)


def _independent(a8, b8):
  a, b = a8.astype(np.float64) / 255, b8.astype(np.float64) / 255
  psnr = -10 * np.log10(np.mean((a - b) ** 2))
  ssim = structural_similarity(a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True,
                               sigma=1.5)
  return psnr, ssim


@pytest.fixture(name="folders")
def _folders(tmp_path):
  a, b = tmp_path / "renders", tmp_path / "gt"
  a.mkdir()
  b.mkdir()
  arrays = {}
  for i in range(3):
    gt = _image(i)
    pred = _noisy(gt, 10 + i)
    Image.fromarray(pred).save(a / f"{i:03d}.png")
    Image.fromarray(gt).save(b / f"{i:03d}.png")
    arrays[f"{i:03d}"] = (pred, gt)
  (a / "notes.txt").write_text("not an image")  # ignored: not an image extension
  return a, b, arrays


def test_folders_pair_by_name_and_scores_are_independent(folders):
  a, b, arrays = folders
  pairs = im.pair_paths(str(a), str(b))
  assert [(os.path.basename(x), os.path.basename(y)) for x, y in pairs] == [
      ("000.png", "000.png"), ("001.png", "001.png"), ("002.png", "002.png")]
  result = im.score_pairs(pairs)
  fns = lp.default_lpips()
  for row, (stem, (pred, gt)) in zip(result["pairs"], sorted(arrays.items())):
    assert row["a"].endswith(f"{stem}.png")
    psnr, ssim = _independent(pred, gt)
    assert row["psnr"] == pytest.approx(psnr, abs=1e-4)
    assert row["ssim"] == pytest.approx(ssim, abs=1e-6)
    for net in ("alex", "vgg"):
      want = float(fns[net](pred.astype(np.float32) / 255, gt.astype(np.float32) / 255))
      assert row[f"lpips_{net}"] == pytest.approx(want, rel=1e-6) and want > 1e-3
  mean = result["mean"]
  assert mean["num_pairs"] == 3
  for key in im.KEYS:
    assert mean[key] == pytest.approx(np.mean([r[key] for r in result["pairs"]]), rel=1e-12)
  table = im.format_table(result).splitlines()
  assert table[0].split()[-4:] == ["PSNR", "SSIM", "LPIPS-alex", "LPIPS-vgg"]
  assert table[-1].startswith("mean of 3 pairs")
  assert table[-1].split()[-4] == f"{mean['psnr']:.2f}"


def test_pairing_ignores_extensions_and_rejects_unpaired(folders, tmp_path):
  a, b, arrays = folders
  os.rename(b / "001.png", b / "001.jpg")  # pairs by name without the extension
  assert len(im.pair_paths(str(a), str(b))) == 3
  os.remove(b / "002.png")
  (b / "extra.png").write_bytes((a / "000.png").read_bytes())
  with pytest.raises(UsageError, match=rf"unpaired image names; only in {a}: 002; "
                     rf"only in {b}: extra$"):
    im.pair_paths(str(a), str(b))
  (a / "000.jpg").write_bytes(b"")
  with pytest.raises(UsageError, match=r"two images named '000'"):
    im.pair_paths(str(a), str(b))
  with pytest.raises(UsageError, match=r"give two images or two folders: .* is a folder, "
                     r".* is a file"):
    im.pair_paths(str(a), str(b / "000.png"))
  with pytest.raises(UsageError, match="nowhere: no such file or folder"):
    im.pair_paths(str(tmp_path / "nowhere"), str(b))


def test_size_mismatch_and_unreadable_files_are_named(tmp_path):
  small, big = tmp_path / "small.png", tmp_path / "big.png"
  Image.fromarray(_image(0, 40, 48)).save(small)
  Image.fromarray(_image(0, 48, 48)).save(big)
  with pytest.raises(UsageError, match=r"sizes differ: .*small.png is 48x40, .*big.png is "
                     r"48x48 \(width x height\)"):
    im.score_pairs([(str(small), str(big))])
  broken = tmp_path / "broken.png"
  broken.write_bytes(b"\x89PNG not really")
  with pytest.raises(UsageError, match=r"broken.png: not a readable image"):
    im.score_pairs([(str(small), str(broken))])
  tiny = tmp_path / "tiny.png"
  Image.fromarray(_image(0, 20, 24)).save(tiny)
  with pytest.raises(UsageError, match=r"tiny.png: 24x20 pixels, LPIPS-vgg needs at least "
                     r"16x16|tiny.png: 24x20 pixels, LPIPS-alex needs at least 31x31"):
    im.score_pairs([(str(tiny), str(tiny))])
  assert set(im.score_pairs([(str(tiny), str(tiny))], lpips_nets="")["mean"]) == {
      "num_pairs", "psnr", "ssim"}


def test_alpha_is_composited_and_grey_is_rgb(tmp_path):
  rgb = _image(3)
  alpha = np.linspace(0, 255, rgb.shape[1]).astype(np.uint8)[None, :].repeat(rgb.shape[0], 0)
  path = tmp_path / "rgba.png"
  Image.fromarray(np.dstack([rgb, alpha])).save(path)
  a = alpha[..., None] / 255.0
  want_white = rgb / 255.0 * a + (1 - a)
  np.testing.assert_allclose(im.read_image(str(path)), want_white, atol=1e-6)
  np.testing.assert_allclose(im.read_image(str(path), "black"), rgb / 255.0 * a, atol=1e-6)
  grey = tmp_path / "grey.png"
  Image.fromarray(rgb[..., 0]).save(grey)
  np.testing.assert_allclose(im.read_image(str(grey)), np.repeat(rgb[..., :1], 3, -1) / 255.0,
                             atol=1e-7)
  grey16 = tmp_path / "grey16.png"
  Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(grey16)
  np.testing.assert_allclose(im.read_image(str(grey16)), np.repeat(rgb[..., :1], 3, -1) / 255.0,
                             atol=1e-6)


def test_command_line(folders):
  a, b, _ = folders
  run = lambda *args: subprocess.run([sys.executable, "-m", "movenerf.tools.image_metrics",
                                      *args], capture_output=True, text=True, cwd=ROOT,
                                     timeout=300, check=False)
  done = run(str(a / "000.png"), str(b / "000.png"), "--json")
  assert done.returncode == 0, done.stderr
  data = json.loads(done.stdout)
  assert set(data) == {"pairs", "mean"} and len(data["pairs"]) == 1
  assert set(data["pairs"][0]) == {"a", "b", "psnr", "ssim", "lpips_alex", "lpips_vgg"}
  direct = im.score_pairs([(str(a / "000.png"), str(b / "000.png"))])["pairs"][0]
  for key in im.KEYS:
    assert data["pairs"][0][key] == pytest.approx(direct[key], rel=1e-6)
  os.remove(b / "001.png")
  done = run(str(a), str(b))
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      f"movenerf.tools.image_metrics: error: unpaired image names; only in {a}: 001")
