"""Datasets built to and read from an object store (a local S3 server), and official GNT
weights read from one: the same bytes and arrays as through a local folder."""

import os
import pickle
from pathlib import Path

import jax
import numpy as np
import pytest

from movenerf import storage
from movenerf.data import sources, views
from movenerf.data.tfds import build
from tests.data.tfds import helpers

OPTIONS = {"num_scenes": 2, "num_views": 9, "height": 16, "width": 24, "kind": "mixed"}
CLI_OPTIONS = [a for k, v in OPTIONS.items() for a in ("--option", f"{k}={v}")]


@pytest.fixture(autouse=True)
def _cache_and_cwd(tmp_path, monkeypatch):
  """Mirrors go to a folder of the test; a path taken for local would land in the cwd."""
  monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
  (tmp_path / "cwd").mkdir()
  monkeypatch.chdir(tmp_path / "cwd")


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
  return build.build("generated", tmp_path_factory.mktemp("local"), options=OPTIONS)


def _assert_same_source(remote, local):
  assert remote.splits() == local.splits()
  for split in local.splits():
    assert [s.scene_id for s in remote.scenes(split)] == [s.scene_id
                                                            for s in local.scenes(split)]
  for scene_id in [s.scene_id for s in local.scenes("train")]:
    ids_r, got = helpers.stack_splits(remote, scene_id)
    ids_l, want = helpers.stack_splits(local, scene_id)
    np.testing.assert_array_equal(ids_r, ids_l)
    helpers.assert_same_record(got, want)


def test_build_to_s3_and_read_back(s3_server, s3_bucket, local_build, tmp_path, capsys):
  out = f"{s3_bucket}/tfds"
  assert build.main(["--format", "generated", "--out", out] + CLI_OPTIONS) == 0
  printed = capsys.readouterr().out
  url = printed.split("path: ")[1].splitlines()[0]
  rel = local_build.relative_to(local_build.parents[2]).as_posix()  # generated/<config>/1.0.0
  assert url == f"{out}/{rel}"
  assert "scenes: 2" in printed and "image size (WxH): 24x16 in 2 scene(s)" in printed
  # Every file of the local build, and nothing else (no probe, no temporary folder).
  keys = s3_server.keys(out)
  want = sorted(f"tfds/{rel}/{f}" for f in storage.list_files(local_build))
  assert sorted(keys) == want and f"tfds/{rel}/dataset_info.json" in keys
  assert not os.path.exists("s3:") and os.listdir(".") == []

  source = views.TfdsSource(url)
  assert source.name == "generated" and source.path == url
  assert not (tmp_path / "cache").exists()  # cameras only: nothing mirrored yet
  _assert_same_source(source, views.TfdsSource(local_build))
  mirror = storage.cache_dir(url, "datasets")
  assert (mirror / "dataset_info.json").read_bytes() == (
      local_build / "dataset_info.json").read_bytes()
  assert not [p for p in mirror.parent.iterdir() if "download" in p.name]
  # Grain workers unpickle the source (still the URL) and reopen the mirror.
  again = pickle.loads(pickle.dumps(source))
  assert again.path == url and again._sources is None
  first = source.scenes("train")[0].scene_id
  np.testing.assert_array_equal(again.load("train", first, [1]).images,
                                source.load("train", first, [1]).images)
  # The config entry takes the URL as it is.
  entry = sources.make_source("d", {"format": "tfds", "path": url})
  assert isinstance(entry, views.TfdsSource) and entry.path == url


def test_stale_mirror_is_replaced_and_overwrite(s3_server, s3_bucket, local_build,
                                                 monkeypatch, capsys):
  out = f"{s3_bucket}/tfds"
  url = build.build("generated", out, options=OPTIONS)
  assert isinstance(url, str) and url.startswith(out + "/generated/")
  # A mirror whose dataset_info.json differs from the remote one is downloaded again.
  mirror = storage.cache_dir(url, "datasets")
  mirror.mkdir(parents=True)
  (mirror / "dataset_info.json").write_text("{}")
  (mirror / "junk").write_text("")
  _assert_same_source(views.TfdsSource(url), views.TfdsSource(local_build))
  assert not (mirror / "junk").exists()
  # A complete mirror is reused without a download.
  monkeypatch.setattr(storage, "download_tree", lambda *a: pytest.fail("downloaded again"))
  reused = views.TfdsSource(url)
  reused.load("test", reused.scenes("test")[-1].scene_id, [0])
  monkeypatch.undo()
  # The remote build exists: refused without --overwrite, replaced with it.
  args = ["--format", "generated", "--out", out] + CLI_OPTIONS
  assert build.main(args) == 1
  assert "already exists; pass --overwrite" in capsys.readouterr().err
  storage.write_bytes(storage.join(url, "stale.bin"), b"x")
  before = s3_server.keys(url)
  assert build.main(args + ["--overwrite"]) == 0
  assert sorted(s3_server.keys(url)) == sorted(k for k in before if not k.endswith("stale.bin"))


def test_missing_bucket_or_dataset_is_one_clear_error(s3_server, s3_bucket, tmp_path,
                                                      capsys):
  out = "s3://movenerf-no-such-bucket/tfds"
  assert build.main(["--format", "generated", "--out", out] + CLI_OPTIONS) == 1
  err = capsys.readouterr().err
  assert err.startswith(f"error: cannot write to {out}: ") and err.count("\n") == 1, err
  assert not os.path.exists("s3:") and os.listdir(".") == []
  assert not (tmp_path / "cache").exists()
  with pytest.raises(FileNotFoundError, match=f"no built dataset at {s3_bucket}/nothing"):
    views.TfdsSource(f"{s3_bucket}/nothing")
  with pytest.raises(ValueError, match="reads a local folder"):
    sources.make_source("d", {"format": "llff", "path": f"{s3_bucket}/llff"})
  assert not os.path.exists("s3:") and not (tmp_path / "cache").exists()


def test_official_npz_from_s3(s3_server, s3_bucket, tmp_path):
  from movenerf.models.gnt import official_checkpoint as oc  # pylint: disable=g-import-not-at-top
  from movenerf.models.gnt.model import GNTConfig  # pylint: disable=g-import-not-at-top
  config = GNTConfig(width=16, depth=2, coarse_feat_dim=8, fine_feat_dim=8, single_net=False,
                     num_samples=4)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32),
                        oc.abstract_params(config))
  np.savez(tmp_path / "ckpt.npz", **oc.export_official_arrays({"params": params}))
  url = f"{s3_bucket}/weights/ckpt.npz"
  storage.copy_file(tmp_path / "ckpt.npz", url)
  got_config, got = oc.load_official_checkpoint(url, num_samples=4)
  want_config, want = oc.load_official_checkpoint(str(tmp_path / "ckpt.npz"), num_samples=4)
  assert got_config == want_config == config
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(FileNotFoundError, match=f"no checkpoint at {s3_bucket}/weights/x.npz"):
    oc.load_official_arrays(f"{s3_bucket}/weights/x.npz")
  assert not os.path.exists("s3:")
