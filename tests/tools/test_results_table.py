"""Tests of movenerf.tools.results_table: per-scene and mean values of fake runs against
hand-computed numbers, missing scenes, the index check, bold, csv / latex output, the
published rows and the command line's one-line errors."""

import csv
import io
import json
import subprocess
import sys

import pytest

from movenerf.evaluation import published
from movenerf.tools import results_table as rt


def _view(scene, view, psnr, ssim, alex, vgg, near):
  return {"dataset": "llff", "scene": scene, "view": view, "psnr": psnr, "ssim": ssim,
          "lpips_alex": alex, "lpips_vgg": vgg,
          "nearest_view": {"psnr": near[0], "ssim": near[1], "lpips_alex": near[2],
                           "lpips_vgg": near[3]}}


def _protocol(**kw):
  out = {"name": "llff", "index_file": "idx.json", "index_sha256": "a" * 64,
         "differences": ["4 source views, not 10"], "missing_scenes": [],
         "lpips_net_published": "vgg"}
  out.update(kw)
  return out


# Run A: fern has two views (means: 21.0, 0.6, alex 0.3, vgg 0.4), flower, room.
RUN_A = {
    "views": [_view("fern", 0, 20.0, 0.5, 0.2, 0.3, (15.0, 0.3, 0.5, 0.6)),
              _view("fern", 1, 22.0, 0.7, 0.4, 0.5, (17.0, 0.5, 0.7, 0.8)),
              _view("flower", 0, 24.0, 0.8, 0.1, 0.2, (19.0, 0.6, 0.3, 0.4)),
              _view("room", 0, 30.0, 0.9, 0.05, 0.1, (25.0, 0.7, 0.25, 0.3))],
    # Deliberately wrong per-scene entries: the per-view rows must win.
    "scenes": [{"dataset": "llff", "scene": "fern", "num_views": 2, "psnr": 99.0,
                "ssim": 0.0, "lpips_alex": 9.0, "lpips_vgg": 9.0}],
    "overall": {},
    "protocol": _protocol(),
}
# Run B: no per-view rows (per-scene entries only); flower is missing.
RUN_B = {
    "scenes": [{"dataset": "llff", "scene": "fern", "num_views": 1, "psnr": 23.0,
                "ssim": 0.65, "lpips_alex": 0.25, "lpips_vgg": 0.35},
               {"dataset": "llff", "scene": "room", "num_views": 1, "psnr": 29.0,
                "ssim": 0.95, "lpips_alex": 0.04, "lpips_vgg": 0.12}],
    "overall": {},
    "protocol": _protocol(missing_scenes=["flower"],
                          differences=["4 source views, not 10", "half resolution"]),
}


@pytest.fixture
def runs(tmp_path):
  """Run A as a workdir (eval/protocol_llff/metrics.json), run B as a folder holding
  metrics.json; returns their paths."""
  a = tmp_path / "runA"
  (a / "eval" / "protocol_llff").mkdir(parents=True)
  (a / "eval" / "protocol_llff" / "metrics.json").write_text(json.dumps(RUN_A))
  b = tmp_path / "b_folder"
  b.mkdir()
  (b / "metrics.json").write_text(json.dumps(RUN_B))
  return str(a), str(b)


def _table(**kw):
  return rt.build([("A", RUN_A), ("B", RUN_B)], "llff", **kw)


def _row(table, label):
  return next(r for r in table["rows"] if r["label"] == label)


def test_scene_means_from_views_and_mean_row():
  table = _table()
  assert table["lpips_net"] == "vgg"  # the published network, as metrics.json records
  names = [g["name"] for g in table["groups"]]
  assert names[:3] == ["A", "B", rt.BASELINE]
  fern = _row(table, "fern")["cells"]
  assert fern[0] == pytest.approx([21.0, 0.6, 0.4])  # mean of the two views, VGG
  assert fern[1] == pytest.approx([23.0, 0.65, 0.35])  # from "scenes"
  assert fern[2] == pytest.approx([16.0, 0.4, 0.7])  # A's nearest views, VGG
  # The mean is over fern and room, the scenes both runs have.
  mean = _row(table, "mean (2 of 3 scenes)")
  assert mean["mean"]
  assert mean["cells"][0] == pytest.approx([(21 + 30) / 2, (0.6 + 0.9) / 2, (0.4 + 0.1) / 2])
  assert mean["cells"][1] == pytest.approx([(23 + 29) / 2, (0.65 + 0.95) / 2,
                                            (0.35 + 0.12) / 2])
  assert mean["cells"][2] == pytest.approx([(16 + 25) / 2, (0.4 + 0.7) / 2, (0.7 + 0.3) / 2])
  alex = _table(lpips="alex")
  assert _row(alex, "fern")["cells"][0][2] == pytest.approx(0.3)
  assert "LPIPS: AlexNet" in alex["header"][0]


def test_missing_scene_is_kept_and_the_subset_mean_is_footnoted():
  table = _table()
  assert [r["label"] for r in table["rows"]] == ["fern", "flower", "room",
                                                 "mean (2 of 3 scenes)"]
  flower = _row(table, "flower")["cells"]
  assert flower[1] == [rt.MISSING] * 3
  assert flower[0] == pytest.approx([24.0, 0.8, 0.2])
  assert any("2 of 3 scenes" in n and "not comparable" in n for n in table["notes"])
  # Differences of both runs, deduplicated, above the table.
  assert table["header"].count("- 4 source views, not 10") == 1
  assert "- half resolution" in table["header"]
  full = rt.build([("A", RUN_A)], "llff")
  assert full["rows"][-1]["label"] == "mean (3 scenes)"
  assert not any("not comparable to a paper" in n for n in full["notes"])
  assert full["rows"][-1]["cells"][0][0] == pytest.approx((21 + 24 + 30) / 3)


def test_missing_scene_listed_only_in_protocol_gets_a_row():
  only = dict(RUN_B, protocol=_protocol(missing_scenes=["horns"]))
  table = rt.build([("B", only)], "llff")
  assert _row(table, "horns")["cells"][0] == [rt.MISSING] * 3
  assert table["rows"][-1]["label"] == "mean (2 of 3 scenes)"


def test_na_metric_propagates():
  run = json.loads(json.dumps(RUN_A))
  run["views"][0]["lpips_vgg"] = "n/a"
  table = rt.build([("A", run)], "llff")
  assert _row(table, "fern")["cells"][0][2] == rt.NA
  assert table["rows"][-1]["cells"][0][2] == rt.NA
  assert "| n/a |" in rt.render(table, "md")


def test_metrics_of_todays_evaluate_summarize():
  """evaluate.summarize's form: one 'lpips' (network unrecorded), no nearest_view, no
  protocol section."""
  rows = [{"dataset": "llff", "scene": "fern", "view": 0, "psnr": 20.0, "ssim": 0.5,
           "lpips": 0.3},
          {"dataset": "llff", "scene": "fern", "view": 1, "psnr": 24.0, "ssim": 0.7,
           "lpips": 0.1}]
  table = rt.build([("old", {"views": rows, "scenes": [], "overall": {}})], "llff")
  assert table["rows"][0]["cells"][0] == pytest.approx([22.0, 0.6, 0.2])
  assert table["rows"][0]["cells"][1] == [rt.NA] * 3
  assert any("no lpips_vgg" in h for h in table["header"])


def test_index_mismatch_is_an_error_unless_allowed():
  other = dict(RUN_B, protocol=_protocol(index_sha256="b" * 64))
  with pytest.raises(rt.UsageError, match="different view indexes"):
    rt.build([("A", RUN_A), ("B", other)], "llff")
  table = rt.build([("A", RUN_A), ("B", other)], "llff", allow_different_index=True)
  assert any("different view indexes" in h for h in table["header"])


def test_bold_marks_the_best_of_runs_and_published():
  md = rt.render(_table(), "md")
  fern = next(l for l in md.splitlines() if l.startswith("| fern |"))
  cells = [c.strip() for c in fern.strip("|").split("|")]
  # A: 21.00 0.600 0.400; B is better on all three, and than the baseline.
  assert cells[1:7] == ["21.00", "0.600", "0.400", "**23.00**", "**0.650**", "**0.350**"]
  assert cells[7:10] == ["16.00", "0.400", "0.700"]
  mean = next(l for l in md.splitlines() if l.startswith("| **mean"))
  cells = [c.strip() for c in mean.strip("|").split("|")]
  # Published GNT (25.86 / 0.867 / 0.116) beats both runs' means on SSIM and LPIPS;
  # GNT-MoVE's 26.02 PSNR beats B's 26.00.
  groups = [g["name"] for g in _table()["groups"]]
  gnt = 1 + 3 * groups.index("GNT (published)")
  move = 1 + 3 * groups.index("GNT-MoVE (published)")
  assert cells[gnt:gnt + 3] == ["25.86", "**0.867**", "**0.116**"]
  assert cells[move] == "**26.02**"
  assert cells[4] == "26.00"


def test_published_rows_carry_numbers_and_source():
  table = _table()
  groups = [g["name"] for g in table["groups"]]
  gnt = groups.index("GNT (published)")
  entry = published.PUBLISHED["llff"]["methods"]["GNT"]
  assert table["rows"][-1]["cells"][gnt] == pytest.approx(
      [entry["mean"]["psnr"], entry["mean"]["ssim"], entry["mean"]["lpips"]])
  assert table["rows"][-1]["cells"][gnt] == pytest.approx([25.86, 0.867, 0.116])
  note = table["groups"][gnt]["note"]
  assert entry["source"] in table["notes"][note - 1]
  md = rt.render(table, "md")
  assert f"[{note}] GNT: {entry['source']}" in md
  assert "IBRNet: not found in sources checked" in md
  # Per-scene published values fill the scene rows; another LPIPS network is not bolded.
  custom = {"methods": {"X": {"mean": {"psnr": 1.0, "ssim": None, "lpips": 0.01},
                              "scenes": {"Room": {"psnr": 31.0, "ssim": 0.5,
                                                  "lpips": 0.001}},
                              "lpips_net": "alex", "source": "paper X, Table 9"}},
            "not_found": []}
  table = rt.build([("A", RUN_A)], "llff", published=custom)
  assert _row(table, "room")["cells"][2] == [31.0, 0.5, 0.001]
  assert _row(table, "fern")["cells"][2] == [None, None, None]
  assert table["rows"][-1]["cells"][2] == [1.0, None, 0.01]
  room = rt.best_flags(table)[2]
  assert room[2] == [True, False, False] and room[0] == [False, True, True]
  assert any("paper X, Table 9" in n and "not compared" in n for n in table["notes"])


def test_published_json_is_sourced():
  for protocol in rt.PROTOCOLS:
    entry = published.PUBLISHED[protocol]
    for method in entry["methods"].values():
      assert method["source"] and any(v is not None for v in method["mean"].values())
    assert isinstance(entry["not_found"], list)
  assert published.PUBLISHED["dtu"]["methods"] == {}


def test_csv_parses_back_to_the_numbers():
  table = _table()
  rows = list(csv.reader(io.StringIO(rt.render(table, "csv"))))
  blank = rows.index([])
  head, body, notes = rows[0], rows[1:blank], rows[blank + 1:]
  assert head[:4] == ["scene", "A PSNR", "A SSIM", "A LPIPS"]
  assert all(n[0] == "note" for n in notes)
  for row, want in zip(body, table["rows"]):
    assert row[0] == want["label"]
    flat = [v for cell in want["cells"] for v in cell]
    for text, value in zip(row[1:], flat):
      if isinstance(value, float):
        assert float(text) == pytest.approx(value, abs=0.006)
      else:
        assert text == ("" if value is None else value)
  mean = body[-1]
  assert [float(v) for v in mean[1:4]] == [25.5, 0.75, 0.25]


def test_latex_escapes_and_bolds():
  run = json.loads(json.dumps(RUN_A))
  for v in run["views"]:
    v["scene"] = v["scene"] + "_x"
  tex = rt.render(rt.build([("my_run", run), ("B&C", RUN_A)], "llff"), "latex")
  assert r"\begin{tabular}" in tex and r"\toprule" in tex and r"\bottomrule" in tex
  assert r"my\_run" in tex and r"B\&C" in tex and r"fern\_x" in tex
  body = [l for l in tex.splitlines() if not l.startswith("%")]
  assert all("_" not in l.replace(r"\_", "") for l in body)
  assert r"\textbf{0.867}" in tex
  assert rt.latex_escape("a_b%c") == r"a\_b\%c"


def test_find_metrics_layouts(runs, tmp_path):
  a, b = runs
  want = f"{a}/eval/protocol_llff/metrics.json"
  assert rt.find_metrics(a, "llff") == want
  assert rt.find_metrics(f"{a}/eval", "llff") == want
  assert rt.find_metrics(want, "llff") == want
  assert rt.find_metrics(b, "llff") == f"{b}/metrics.json"
  assert rt.parse_run(a) == ("runA", a)
  assert rt.parse_run(f"{a}/eval/protocol_llff/metrics.json")[0] == "runA"
  assert rt.parse_run(f"Mine={b}") == ("Mine", b)
  with pytest.raises(rt.UsageError, match="metrics of protocol 'llff', not 'shiny'"):
    rt.load_metrics(want, "shiny")
  text = rt.results_table([f"A={a}", f"B={b}"], "llff", "md")
  assert "| fern | 21.00 | 0.600 | 0.400 | **23.00** |" in text


def _cli(*args):
  proc = subprocess.run([sys.executable, "-m", "movenerf.tools.results_table", *args],
                        capture_output=True, text=True, timeout=60)
  return proc.returncode, proc.stdout, proc.stderr


def test_cli_table_and_errors(runs, tmp_path):
  a, b = runs
  out = tmp_path / "t" / "table.tex"
  code, stdout, _ = _cli("--protocol=llff", "--format=latex", f"--out={out}", a, b)
  assert code == 0 and f"wrote {out}" in stdout
  assert r"\multicolumn{3}{c}{runA}" in out.read_text()
  (tmp_path / "bad.json").write_text("{not json")
  cases = [
      (["--protocol=llff", str(tmp_path / "nowhere")],
       f"{tmp_path / 'nowhere'}: no metrics for protocol 'llff' (looked for "
       f"{tmp_path / 'nowhere'}/eval/protocol_llff/metrics.json"),
      (["--protocol=llff", str(tmp_path / "bad.json")],
       f"{tmp_path / 'bad.json'}: not JSON"),
      (["--protocol=blender", a], "unknown protocol 'blender'; choose one of llff"),
      (["--protocol=llff", "--format=html", a], "unknown format 'html'; choose one of md"),
      (["--protocol=llff"], "give at least one RUN_DIR"),
  ]
  for args, message in cases:
    code, _, stderr = _cli(*args)
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("movenerf.tools.results_table: error: ")
    assert message in lines[0], lines[0]
