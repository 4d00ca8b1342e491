"""Input pipeline: example contents, determinism, resume, host split, TFDS == in-memory."""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from movenerf.data import pipeline, procedural, views
from movenerf.data.tfds import build

SPEC = pipeline.ExampleSpec(num_source_views=4, rays_per_example=48, pair_fraction=0.25,
                            pair_max_distance=2.0)


@pytest.fixture(scope="module")
def records():
  return [procedural.make_record(s, kind, num_views=12, height=24, width=32)
          for s, kind in ((0, "object"), (1, "forward"), (2, "object"))]


@pytest.fixture(scope="module")
def source(records):
  return views.RecordSource(records, "gen")


@pytest.fixture(scope="module")
def maker(source):
  return pipeline.ExampleMaker({"gen": source}, spec=SPEC, seed=7)


def _same(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_example_contents_agree_with_the_scene(maker, records):
  by_id = {r.scene_id: r for r in records}
  for i in range(6):
    ex = maker(i)
    _, s, view = ex["ids"]
    rec = by_id[maker.scenes["gen"][s]]
    assert rec.split[view] == "train"
    # rgb really is the target image at the sampled pixels.
    u, v = ex["pixels"][:, 0], ex["pixels"][:, 1]
    np.testing.assert_array_equal(ex["rgb"], rec.images[view][v, u] / np.float32(255.0))
    np.testing.assert_array_equal(ex["tgt_c2w"], rec.c2w[view])
    # Sources are distinct train views other than the target, with their own cameras.
    train = rec.split_indices("train")
    src_ids = [int(np.nonzero(np.all(rec.c2w == c, axis=(1, 2)))[0][0])
               for c in ex["src_c2w"]]
    assert len(set(src_ids)) == 4 and view not in src_ids and set(src_ids) <= set(train)
    np.testing.assert_array_equal(ex["src_images"], rec.images[src_ids])
    np.testing.assert_array_equal(ex["src_intrinsics"], rec.intrinsics[src_ids])
    # Pairs (12 rays = 6 pairs) are within the distance threshold.
    pairs = ex["pairs"]
    assert pairs.shape == (6, 2) and np.all(pairs >= 0)
    d = np.linalg.norm(ex["pixels"][pairs[:, 0]] - ex["pixels"][pairs[:, 1]], axis=-1)
    assert np.all((d > 0) & (d <= 2.0))
    assert ex["near"] == rec.near[0] and ex["far"] == rec.far[0]


def test_examples_are_a_function_of_seed_and_index(source, maker):
  again = pipeline.ExampleMaker({"gen": source}, spec=SPEC, seed=7)
  other = pipeline.ExampleMaker({"gen": source}, spec=SPEC, seed=8)
  assert _same(maker(3), again(3))
  assert not np.array_equal(maker(3)["pixels"], other(3)["pixels"])
  # Over many examples every scene and many target views are drawn.
  ids = np.stack([maker(i)["ids"] for i in range(60)])
  assert set(ids[:, 1]) == {0, 1, 2} and len(set(map(tuple, ids[:, 1:]))) > 15


@pytest.mark.parametrize("num_workers", [0, 2])
def test_iterator_resumes_exactly(maker, num_workers):
  it = pipeline.train_iterator(maker, global_batch=2, num_workers=num_workers)
  first = [next(it) for _ in range(3)]
  state = it.get_state()  # what the checkpoint stores
  assert json.loads(state) == {"next_step": 3}
  rest = [next(it) for _ in range(2)]
  it.close()
  # Batch s holds examples 2s, 2s + 1.
  for s, batch in enumerate(first + rest):
    for j in range(2):
      assert _same({k: v[j] for k, v in batch.items()}, maker(2 * s + j))
  # The position does not depend on the worker processes: resume with another count.
  resumed = pipeline.train_iterator(maker, global_batch=2, num_workers=2 - num_workers,
                                    state=state)
  again = [next(resumed) for _ in range(2)]
  resumed.close()
  assert all(_same(a, b) for a, b in zip(rest, again))


def test_hosts_read_disjoint_shares_of_each_global_batch(maker):
  one = pipeline.train_dataset(maker, global_batch=4)
  hosts = [pipeline.train_dataset(maker, global_batch=4, process_index=h, process_count=2)
           for h in range(2)]
  for step in range(3):
    whole = {tuple(x) for x in one[step]["pixels"].reshape(4, -1)}
    shares = [{tuple(x) for x in h[step]["pixels"].reshape(2, -1)} for h in hosts]
    assert len(shares[0] | shares[1]) == 4 and not shares[0] & shares[1]
    assert shares[0] | shares[1] == whole
  with pytest.raises(ValueError, match="does not split over 3 hosts"):
    pipeline.train_dataset(maker, global_batch=4, process_index=0, process_count=3)


def test_tfds_source_gives_the_same_stream(tmp_path, records, maker):
  path = build.build("generated", tmp_path, options={
      "num_scenes": 3, "num_views": 12, "height": 24, "width": 32, "kind": "mixed"})
  tfds_source = views.TfdsSource(path)
  # The in-memory records are seeds 0 (object), 1 (forward), 2 (object): "mixed" too.
  from_disk = pipeline.ExampleMaker({"gen": tfds_source}, spec=SPEC, seed=7)
  for i in range(4):
    assert _same(from_disk(i), maker(i))
  # Worker processes reopen the files (the source pickles without them).
  it = pipeline.train_iterator(from_disk, global_batch=2, num_workers=1)
  batch = next(it)
  it.close()
  assert _same({k: v[1] for k, v in batch.items()}, maker(1))


def test_mixture_weights_and_source_resize(records):
  small = views.RecordSource(records[:1], "a")
  big = views.RecordSource([procedural.make_record(5, num_views=8, height=48, width=64)], "b")
  spec = pipeline.ExampleSpec(num_source_views=3, rays_per_example=16, source_size=(24, 32))
  maker = pipeline.ExampleMaker({"a": small, "b": big}, {"a": 1.0, "b": 3.0}, spec, seed=0)
  picks = np.array([maker(i)["ids"][0] for i in range(400)])
  assert abs(picks.mean() - 0.75) < 0.07  # "b" (index 1) drawn 3x as often
  ex = next(maker(i) for i in range(20) if maker(i)["ids"][0] == 1)
  assert ex["src_images"].shape == (3, 24, 32, 3)
  k_big = big.scene("train", big.scenes("train")[0].scene_id).intrinsics[0]
  np.testing.assert_allclose(ex["src_intrinsics"][0, 0, 0], k_big[0, 0] / 2, rtol=1e-6)
  # Both datasets now batch together.
  batch = pipeline.train_dataset(maker, global_batch=4)[0]
  assert batch["src_images"].shape == (4, 3, 24, 32, 3)


def test_device_batch_on_a_mesh(maker):
  mesh = jax.make_mesh((1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  host = pipeline.train_dataset(maker, global_batch=1)[0]
  dev = pipeline.to_device_batch(host, mesh)
  for k in host:
    np.testing.assert_array_equal(np.asarray(dev[k]), host[k])
    assert dev[k].sharding.spec == jax.sharding.PartitionSpec("data")


def test_eval_examples(source, records):
  exs = list(pipeline.eval_examples(source, num_source_views=4))
  assert len(exs) == sum(int((r.split == "test").sum()) for r in records)
  ex = exs[0]
  rec = records[0]
  t = rec.split_indices("test")[0]
  np.testing.assert_array_equal(ex["tgt_image"], rec.images[t])
  np.testing.assert_array_equal(ex["tgt_depth"], rec.depths[t])
  # Nearest train views by camera position, closest first.
  train = rec.split_indices("train")
  dist = np.linalg.norm(rec.c2w[train, :3, 3] - rec.c2w[t, :3, 3], axis=-1)
  np.testing.assert_array_equal(ex["src_c2w"], rec.c2w[train[np.argsort(dist)[:4]]])
  again = next(pipeline.eval_examples(source, num_source_views=4))
  assert _same({k: v for k, v in ex.items() if k != "scene_id"},
               {k: v for k, v in again.items() if k != "scene_id"})


def test_pipeline_errors(source, records):
  with pytest.raises(ValueError, match="empty dataset list"):
    pipeline.ExampleMaker({})
  with pytest.raises(ValueError, match="name different datasets"):
    pipeline.ExampleMaker({"gen": source}, {"other": 1.0})
  with pytest.raises(ValueError, match="no scene has 20 source views"):
    pipeline.ExampleMaker({"gen": source}, spec=pipeline.ExampleSpec(num_source_views=20))
  with pytest.raises(ValueError, match="lacks split 'val'"):
    pipeline.ExampleMaker({"gen": source}, spec=pipeline.ExampleSpec(target_split="val"))
  with pytest.raises(ValueError, match=r"unknown example option\(s\) \['rays'\]"):
    pipeline.ExampleSpec.from_config({"rays": 3})
  with pytest.raises(ValueError, match="empty scene list"):
    views.RecordSource([])
  with pytest.raises(ValueError, match="repeated scene ids"):
    views.RecordSource([records[0], records[0]])
  with pytest.raises(FileNotFoundError, match="no built dataset"):
    views.TfdsSource("/nonexistent/dataset")
  mask_maker = pipeline.ExampleMaker(
      {"gen": source}, spec=pipeline.ExampleSpec(num_source_views=3, rays_per_example=32,
                                                 pixel_mode="mask"))
  ex = mask_maker(0)
  rec = {r.scene_id: r for r in records}[mask_maker.scenes["gen"][ex["ids"][1]]]
  assert rec.masks[ex["ids"][2]][ex["pixels"][:, 1], ex["pixels"][:, 0]].all()


def test_whole_image_examples():
  rec = procedural.make_record(1, num_views=9, height=24, width=32)
  src = views.RecordSource([rec], "g")
  spec = pipeline.ExampleSpec(num_source_views=3, rays_per_example=24 * 32,
                              pixel_mode="image")
  ex = pipeline.ExampleMaker({"g": src}, spec=spec, seed=0)(5)
  h, w = 24, 32
  np.testing.assert_array_equal(ex["pixels"][:, 0], np.tile(np.arange(w), h))
  np.testing.assert_array_equal(ex["pixels"][:, 1], np.repeat(np.arange(h), w))
  view = int(ex["ids"][2])  # the view's index in the whole scene
  np.testing.assert_allclose(ex["rgb"].reshape(h, w, 3), rec.images[view] / 255.0,
                             atol=1e-7)
  assert ex["pairs"].shape == (0, 2)

  # With source_size the target is resized too, and its intrinsics scaled with it.
  spec = pipeline.ExampleSpec(num_source_views=3, rays_per_example=12 * 16,
                              pixel_mode="image", source_size=(12, 16))
  small = pipeline.ExampleMaker({"g": src}, spec=spec, seed=0)(5)
  assert small["src_images"].shape == (3, 12, 16, 3) and small["rgb"].shape == (192, 3)
  np.testing.assert_allclose(small["tgt_intrinsics"][:2], ex["tgt_intrinsics"][:2] / 2,
                             rtol=1e-6)

  with pytest.raises(ValueError, match=r"rays_per_example = H \* W = 24x32 = 768"):
    pipeline.ExampleMaker({"g": src}, seed=0, spec=pipeline.ExampleSpec(
        num_source_views=3, rays_per_example=512, pixel_mode="image"))


def test_eval_examples_resize():
  rec = procedural.make_record(2, num_views=9, height=24, width=32)
  src = views.RecordSource([rec], "g")
  full = next(pipeline.eval_examples(src, 3))
  half = next(pipeline.eval_examples(src, 3, image_size=(12, 16)))
  assert half["tgt_image"].shape == (12, 16, 3) and half["src_images"].shape == (3, 12, 16, 3)
  assert half["tgt_depth"].shape == (12, 16) and half["tgt_mask"].shape == (12, 16)
  np.testing.assert_allclose(half["src_intrinsics"][:, :2], full["src_intrinsics"][:, :2] / 2,
                             rtol=1e-6)
  # Nearest resizing of the depth keeps true depth values (no blending across edges).
  assert set(np.unique(half["tgt_depth"])) <= set(np.unique(full["tgt_depth"]))


WORKERS = """
import multiprocessing, time
from absl import app
from movenerf.data import pipeline, procedural, views

def main(_):
  source = views.RecordSource([procedural.make_record(0, "object", num_views=12, height=24,
                                                      width=32)], "gen")
  maker = pipeline.ExampleMaker({"gen": source}, spec=pipeline.ExampleSpec(
      num_source_views=4, rays_per_example=8), seed=0)
  it = pipeline.train_iterator(maker, global_batch=2, num_workers=2)
  next(it)
  deadline = time.time() + 120  # grain may start its second worker after the first batch
  while len(multiprocessing.active_children()) < 2 and time.time() < deadline:
    time.sleep(0.1)
  print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
  time.sleep(600)

app.run(main)
"""


def _alive(pid):
  try:
    with open(f"/proc/{pid}/status") as f:
      return not any(line.split()[:2] == ["State:", "Z"] for line in f)
  except FileNotFoundError:
    return False


def test_worker_processes_exit_when_their_parent_is_killed():
  parent = subprocess.Popen([sys.executable, "-c", WORKERS], stdout=subprocess.PIPE, text=True)
  try:
    workers = [int(p) for p in parent.stdout.readline().split()]
  finally:
    parent.send_signal(signal.SIGKILL)  # no chance to stop its workers itself
    parent.wait()
  assert len(workers) == 2
  deadline = time.time() + 120  # a worker may still be starting (importing)
  while any(map(_alive, workers)) and time.time() < deadline:
    time.sleep(0.2)
  assert not any(map(_alive, workers)), [w for w in workers if _alive(w)]
