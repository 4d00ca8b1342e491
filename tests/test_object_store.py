"""A whole run on an object store (a local S3 server): the dataset is built to s3://,
training writes its workdir to s3://, is killed, resumes and evaluates; nothing lands in
a local folder named after the URL, and a missing bucket is one line before any step."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from movenerf import storage
from movenerf.data.tfds import build

REPO = Path(__file__).resolve().parents[1]
STEPS = 6
SCENE = dict(num_views=9, height=16, width=16, holdout_every=8)

# tests/helpers.small_config as flags; the training scenes come from the built dataset.
FLAGS = [
    "--config", f"{REPO}/experiments/gnt.py:tiny",
    "--config.model.width=16", "--config.model.coarse_feat_dim=8",
    "--config.model.fine_feat_dim=8", "--config.model.num_samples=8",
    "--config.model.feature_width=8",
    "--config.data.train.generated.format=tfds",
    "--config.data.eval.unseen.options.num_scenes=1",
    "--config.data.eval.unseen.options.num_views=9",
    "--config.data.eval.unseen.options.height=16",
    "--config.data.eval.unseen.options.width=16",
    "--config.data.example.num_source_views=3", "--config.data.example.rays_per_example=32",
    "--config.data.global_batch=2",
    f"--config.train.num_steps={STEPS}", "--config.train.log_every=1",
    "--config.train.image_every=0", "--config.train.checkpoint_every=2",
    "--config.eval.num_source_views=3", "--config.eval.max_views_per_scene=1",
    "--config.eval.chunk_size=64", "--config.eval.video_frames=2",
    "--config.eval.lpips=vgg",  # 16x16 views: LPIPS-alex needs 31
]
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"


def _train(workdir: str, cwd: Path, *extra: str) -> subprocess.Popen:
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu", XLA_FLAGS=FAST_COMPILE,
             MOVENERF_CACHE=str(cwd / "cache"))
  return subprocess.Popen([sys.executable, "-m", "movenerf.train", "--workdir", workdir,
                           *FLAGS, *extra], cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, ok: bool = True) -> str:
  try:
    out = proc.communicate(timeout=600)[0]
  finally:
    proc.kill()
  assert (proc.returncode == 0) == ok, out[-4000:]
  return out


def _url_folders(root: Path) -> list:
  return [p for p in root.rglob("*") if p.name in ("s3:", "s3") or "s3:" in p.name]


def test_build_train_kill_resume_evaluate_on_s3(s3_server, s3_bucket, tmp_path,
                                                monkeypatch):
  monkeypatch.chdir(tmp_path)
  data = build.build("generated", f"{s3_bucket}/tfds", options=dict(SCENE, num_scenes=3))
  assert str(data).startswith(f"{s3_bucket}/tfds/generated/")
  run = f"{s3_bucket}/run"
  flags = [f"--config.data.train.generated.path={data}"]

  job = _train(run, tmp_path, *flags, "--config.eval.at_end=false")
  deadline = time.monotonic() + 500
  marker = "run/checkpoints/2/_MOVENERF_UPLOADED"
  while marker not in s3_server.keys(run):
    assert job.poll() is None, job.stdout.read()[-4000:]
    assert time.monotonic() < deadline, "no uploaded checkpoint"
    time.sleep(0.2)
  job.send_signal(signal.SIGKILL)
  _finish(job, ok=False)

  out = _finish(_train(run, tmp_path, *flags))
  assert f"resuming from {run}/checkpoints/" in out
  keys = set(s3_server.keys(run))
  for key in ("config.json", "train_metrics.jsonl", "result.json", "eval/metrics.json",
              "eval/metrics.txt", "eval/video.mp4"):
    assert f"run/{key}" in keys, (key, sorted(keys))
  assert any(k.startswith("run/tb/events.out.tfevents") for k in keys)
  assert any(k.endswith("_pred.png") for k in keys)
  assert f"run/checkpoints/{STEPS}/_MOVENERF_UPLOADED" in keys
  rows = [json.loads(l) for l in storage.read_text(f"{run}/train_metrics.jsonl").splitlines()]
  assert [r["step"] for r in rows] == list(range(1, STEPS + 1))  # no repeated steps
  metrics = json.loads(storage.read_text(f"{run}/eval/metrics.json"))
  assert metrics["overall"]["num_views"] == 1 and metrics["overall"]["psnr"] > 5
  assert 0 < metrics["overall"]["lpips_vgg"] < 1
  # Nothing was written to a local folder named after the URL (here or in the repo).
  assert not _url_folders(tmp_path) and not os.path.exists(REPO / "s3:")


def test_missing_bucket_is_one_line_before_any_step(s3_server, tmp_path):
  proc = _train("s3://no-such-bucket-movenerf/run", tmp_path, "--config.train.num_steps=1",
                "--config.data.train.generated.format=generated")
  out = _finish(proc, ok=False)
  assert proc.returncode == 2
  lines = [l for l in out.strip().splitlines() if "Warning" not in l and l.strip()]
  assert lines[-1].startswith("movenerf.train: error: --workdir cannot write to "
                              "s3://no-such-bucket-movenerf/run"), out[-3000:]
  assert "Traceback" not in out and "step 1" not in out
  assert not _url_folders(tmp_path)
