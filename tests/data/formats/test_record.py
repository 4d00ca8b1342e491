"""SceneRecord and the helpers the readers share."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from movenerf.data.formats import nerf_synthetic, record
from tests.data.formats import helpers


def test_select_and_split_indices(real):
  rec = helpers.read_cached(nerf_synthetic.read_nerf_synthetic, real / "nerf_synthetic" / "lego")
  test = rec.select(rec.split_indices("test"))
  assert test.num_views == 10 and np.all(test.split == "test")
  by_mask = rec.select(rec.split == "test")
  np.testing.assert_array_equal(by_mask.c2w, test.c2w)


def _record(n=3, h=4, w=5):
  return record.SceneRecord(
      scene_id="s", images=np.zeros([n, h, w, 3], np.uint8),
      intrinsics=np.tile(np.eye(3, dtype=np.float32), (n, 1, 1)),
      c2w=np.tile(np.eye(4, dtype=np.float32), (n, 1, 1)),
      near=np.full([n], 1.0, np.float32), far=np.full([n], 2.0, np.float32),
      split=np.array(["train", "test", "train"][:n]))


def test_record_sizes_and_select_of_masks_and_depths():
  rec = dataclasses.replace(_record(), masks=np.zeros([3, 4, 5], bool),
                            depths=np.arange(60, dtype=np.float32).reshape(3, 4, 5))
  assert (rec.num_views, rec.height, rec.width) == (3, 4, 5)
  np.testing.assert_array_equal(rec.split_indices("train"), [0, 2])
  sub = rec.select([2])
  assert sub.num_views == 1 and sub.masks.shape == (1, 4, 5)
  np.testing.assert_array_equal(sub.depths[0], rec.depths[2])
  assert rec.select([0]).scene_id == "s" and _record().select([1]).masks is None


def test_load_image_modes_and_errors(tmp_path):
  Image.fromarray(np.full((3, 4), 9, np.uint8)).save(tmp_path / "grey.png")
  Image.fromarray(np.full((3, 4, 2), 9, np.uint8), mode="LA").save(tmp_path / "la.png")
  assert record.load_image(tmp_path / "grey.png").shape == (3, 4, 1)
  assert record.load_image(tmp_path / "la.png").shape == (3, 4, 4)  # converted to RGBA
  with pytest.raises(FileNotFoundError, match=r"image file not found: .*nope\.png"):
    record.load_image(tmp_path / "nope.png")
  (tmp_path / "bad.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"bad\.png.*corrupt or truncated"):
    record.load_image(tmp_path / "bad.png")


def test_to_rgb_composites_alpha():
  rgba = np.zeros((1, 2, 4), np.uint8)
  rgba[0, 0] = [255, 0, 0, 255]  # opaque red
  rgba[0, 1] = [0, 0, 0, 0]      # transparent
  np.testing.assert_array_equal(record.to_rgb(rgba, 1.0), [[[255, 0, 0], [255, 255, 255]]])
  np.testing.assert_array_equal(record.to_rgb(rgba), rgba[..., :3])
  grey = np.full((1, 1, 1), 7, np.uint8)
  np.testing.assert_array_equal(record.to_rgb(grey), [[[7, 7, 7]]])


def test_list_images_and_stack_same_size(tmp_path):
  with pytest.raises(FileNotFoundError, match="image folder not found"):
    record.list_images(tmp_path / "none")
  (tmp_path / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="empty scene: no images in"):
    record.list_images(tmp_path)
  helpers.write_png(tmp_path / "b.png", (4, 4, 3))
  helpers.write_png(tmp_path / "a.png", (4, 2, 3))
  files = record.list_images(tmp_path)
  assert [p.name for p in files] == ["a.png", "b.png"]
  arrays = [record.load_image(p) for p in files]
  with pytest.raises(ValueError, match=r"mixed image sizes in scene: .*b\.png is 4x4"):
    record.stack_same_size(arrays, files)
  assert record.stack_same_size(arrays[1:], files[1:]).shape == (1, 4, 4, 3)
  with pytest.raises(FileNotFoundError, match="scene folder not found"):
    record.check_scene_dir(tmp_path / "none")
  assert record.check_scene_dir(str(tmp_path)) == tmp_path


@pytest.mark.parametrize("edit,pattern", [
    (lambda r: dataclasses.replace(r, images=r.images[:0]), "empty scene"),
    (lambda r: dataclasses.replace(r, intrinsics=r.intrinsics * np.nan), "intrinsics"),
    (lambda r: dataclasses.replace(r, c2w=np.full_like(r.c2w, np.inf)), "camera poses"),
    (lambda r: dataclasses.replace(r, far=r.far * np.nan), "near/far bounds"),
    (lambda r: dataclasses.replace(r, near=np.array([1.0, 3.0, 1.0], np.float32)),
     r"near >= far for 1 view\(s\), e.g. view 1"),
    (lambda r: dataclasses.replace(r, near=np.array([-1.0, 1.0, 1.0], np.float32)),
     "negative near"),
])
def test_check_record_errors_name_the_source(edit, pattern):
  assert record.check_record(_record(), "src") is not None
  with pytest.raises(ValueError, match=pattern) as e:
    record.check_record(edit(_record()), "src/poses")
  assert "src/poses" in str(e.value)
