"""movenerf.storage on local paths and on a local S3 server."""

import json
import os
import stat

import pytest

from movenerf import storage


def test_local_write_is_atomic_readable_and_leaves_no_temp(tmp_path):
  target = tmp_path / "a" / "b.json"
  storage.write_json(target, {"x": float("nan"), "y": [1.5, float("inf")]})
  assert json.loads(target.read_text()) == {"x": None, "y": [1.5, None]}
  assert sorted(os.listdir(target.parent)) == ["b.json"]
  assert stat.S_IMODE(target.stat().st_mode) & 0o044 == 0o044


def test_jsonlines_drops_a_cut_record_and_redone_steps(tmp_path):
  log = tmp_path / "m.jsonl"
  log.write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
  lines = storage.JsonLines(log)
  lines.truncate_after(2)
  lines.append({"step": 3, "loss": float("nan")})
  records = [json.loads(l) for l in log.read_text().splitlines()]
  assert records == [{"step": 1}, {"step": 2}, {"step": 3, "loss": None}]


def test_check_writable_names_the_path(tmp_path):
  (tmp_path / "f").write_text("")
  with pytest.raises(storage.StorageError, match=f"{tmp_path / 'f'} is a file"):
    storage.check_writable(tmp_path / "f")


def test_s3_round_trip_and_listing(s3_server, s3_bucket, tmp_path):
  url = f"{s3_bucket}/run"
  storage.check_writable(url)
  storage.write_json(storage.join(url, "c.json"), {"a": 1})
  lines = storage.JsonLines(storage.join(url, "m.jsonl"))
  for step in range(1, 4):
    lines.append({"step": step})
  lines = storage.JsonLines(storage.join(url, "m.jsonl"))  # as a resumed run sees it
  lines.truncate_after(2)
  (tmp_path / "tree" / "d").mkdir(parents=True)
  (tmp_path / "tree" / "d" / "x.bin").write_bytes(b"123")
  (tmp_path / "tree" / "done").write_text("")
  storage.upload_tree(tmp_path / "tree", storage.join(url, "tree"), last=["done"])
  storage.download_tree(storage.join(url, "tree"), tmp_path / "back")
  assert (tmp_path / "back" / "d" / "x.bin").read_bytes() == b"123"
  assert json.loads(storage.read_text(storage.join(url, "c.json"))) == {"a": 1}
  assert storage.read_text(storage.join(url, "m.jsonl")) == '{"step": 1}\n{"step": 2}\n'
  assert sorted(s3_server.keys(url)) == ["run/c.json", "run/m.jsonl", "run/tree/d/x.bin",
                                         "run/tree/done"]
  assert not os.path.exists("s3:")


def test_s3_missing_bucket_is_one_clear_error(s3_server):
  with pytest.raises(storage.StorageError, match="cannot write to s3://no-such-bucket-x/run"):
    storage.check_writable("s3://no-such-bucket-x/run")
