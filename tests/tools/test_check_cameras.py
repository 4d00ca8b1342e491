"""check_cameras: the verdicts of movenerf.data.camera_check per scene, a sheet and a JSON
file; exit status 0 when every scene passes, 1 when one fails, 2 for bad input (one line,
nothing written)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from movenerf.data import camera_check, procedural
from movenerf.data.formats import registry
from movenerf.tools import check_cameras
from movenerf.validation import UsageError
from tests.data.formats import helpers

REPO = Path(__file__).resolve().parents[2]
PROG = "movenerf.tools.check_cameras"


def _run(*args):
  return subprocess.run([sys.executable, "-m", PROG, *args], capture_output=True, text=True,
                        cwd=REPO, timeout=600)


def test_passing_scenes_exit_0_with_a_sheet_each_and_their_figures(tmp_path):
  out = tmp_path / "out"
  done = _run("--format", "generated", "--scenes", "0,1", "--out", str(out))
  assert done.returncode == 0, done.stderr
  summary = json.loads((out / check_cameras.JSON_NAME).read_text())
  names = ["procedural_object_000000", "procedural_object_000001"]
  assert summary["passed"] and [s["scene"] for s in summary["scenes"]] == names
  assert summary["thresholds"] == camera_check.THRESHOLDS
  for seed, entry in enumerate(summary["scenes"]):
    # The figures are those of the library's check of the same scene.
    want = camera_check.check_scene(
        procedural.generated_record(seed, registry.parse_options("generated", {})))
    assert entry["method"] == "depth" and entry["passed"]
    assert [(c["name"], c["value"], c["passed"]) for c in entry["criteria"]] == [
        (c.name, pytest.approx(c.value), c.passed) for c in want.criteria]
    with Image.open(out / entry["sheet"]) as im:
      sheet = np.asarray(im.convert("RGB"))
    assert sheet.shape[0] > 2 * 256 and sheet.std() > 10  # two rows of views, not blank
    assert f"{names[seed]} | depth | pass" in done.stdout
  assert "scenes: 2/2 scenes" in done.stdout and "ETA" in done.stdout
  assert "2 of 2 scenes pass" in done.stdout
  assert sorted(p.name for p in out.iterdir()) == sorted(
      [check_cameras.JSON_NAME] + [f"{n}.png" for n in names])


def test_a_wrong_convention_exits_1_naming_the_scene(tmp_path):
  out = tmp_path / "out"
  done = _run("--format", "generated", "--scenes", "2", "--out", str(out), "--corrupt",
              "intrinsics_x2")
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1] == (
      f"{PROG}: 1 of 1 scenes fail the camera check: procedural_object_000002 (see "
      f"{out / check_cameras.JSON_NAME})")
  summary = json.loads((out / check_cameras.JSON_NAME).read_text())
  assert not summary["passed"] and summary["corrupt"] == "intrinsics_x2"
  failed = [c["name"] for c in summary["scenes"][0]["criteria"] if c["passed"] is False]
  assert "depth_seen" in failed
  assert (out / "procedural_object_000002.png").is_file()


def test_an_unknown_format_is_one_line_exit_2_and_nothing_is_written(tmp_path):
  done = _run("--format", "colmap", "--src", str(tmp_path), "--out", str(tmp_path / "out"))
  assert done.returncode == 2
  assert done.stderr.strip() == (
      f"{PROG}: error: unknown dataset format 'colmap'; known formats: "
      f"{', '.join(registry.format_names())}")
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(fmt="llff"), "--src: give the folder of the llff scenes"),
    (dict(fmt="llff", src="missing"), "--src=missing: no such folder"),
    (dict(fmt="llff", scenes=["fern", "ferm"]), "--scenes: no scene 'ferm' in"),
    (dict(fmt="llff", options={"factr": "8"}), "unknown option(s) ['factr'] for format"),
    (dict(fmt="generated", scenes=["one"]), "generated scenes are named by their seeds"),
    (dict(fmt="generated", views=0), "--views=0: must be >= 1"),
])
def test_bad_input_is_named_before_anything_is_written(tmp_path, kwargs, message):
  (tmp_path / "fern").mkdir()
  (tmp_path / "fern" / "poses_bounds.npy").write_bytes(b"")
  kwargs = dict(kwargs)
  fmt = kwargs.pop("fmt")
  if "src" in kwargs:
    kwargs["src"] = str(tmp_path / kwargs["src"])
    message = message.replace("missing", kwargs["src"])
  elif fmt != "generated" and "scenes" in kwargs or "options" in kwargs:
    kwargs["src"] = str(tmp_path)
  with pytest.raises(UsageError) as error:
    check_cameras.check(fmt, str(tmp_path / "out"), log=lambda line: None, **kwargs)
  assert message in str(error.value)
  assert not (tmp_path / "out").exists()


def test_a_scene_that_does_not_read_fails_and_the_others_are_checked(tmp_path):
  src = tmp_path / "src"
  helpers.write_collected(src, procedural.make_scene(0, num_views=6, height=32, width=32))
  broken = src / "ibrnet_collected_1" / "broken"
  broken.mkdir()
  (broken / "poses_bounds.npy").write_bytes(b"not an array")
  lines = []
  summary = check_cameras.check("ibrnet_collected", str(tmp_path / "out"),
                                src=str(src / "ibrnet_collected_1"), log=lines.append)
  by_name = {s["scene"]: s for s in summary["scenes"]}
  assert by_name["broken"]["method"] == "none" and not by_name["broken"]["passed"]
  assert "poses_bounds.npy" in by_name["broken"]["note"]
  assert by_name["broken"]["sheet"] is None
  assert by_name["room"]["method"] == "images"
  assert not summary["passed"]
  rows = "\n".join(lines).splitlines()
  assert any(row.startswith("broken | none   | FAIL    | cannot be checked") for row in rows)
