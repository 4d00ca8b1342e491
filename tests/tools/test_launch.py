"""The multi-process launcher with tiny child scripts (no JAX in them): the environment and
flags each child gets, prefixed output, exit codes, a failed child stopping the others,
signal forwarding. The real multi-process training run is tests/test_distributed.py."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from movenerf.tools import launch

REPO = Path(__file__).resolve().parents[2]


def _script(tmp_path: Path, body: str) -> str:
  """A child script; ``ID`` is its process id, ``HERE`` the test's tmp_path."""
  path = tmp_path / "child.py"
  path.write_text("import os, signal, sys, time\n"
                  "ID = int(os.environ['MOVENERF_PROCESS_ID'])\n"
                  f"HERE = {str(tmp_path)!r}\n" + body)
  return str(path)


def _launch(args, env=None, **kwargs) -> subprocess.Popen:
  env = dict(os.environ if env is None else env, PYTHONPATH=str(REPO))
  return subprocess.Popen([sys.executable, "-m", "movenerf.tools.launch", *args], cwd=REPO,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **kwargs)


def _run(args, env=None, timeout=60) -> subprocess.CompletedProcess:
  proc = _launch(args, env)
  out, err = proc.communicate(timeout=timeout)
  return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _gone(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return True
  return False


def test_children_get_the_layout_in_their_flags_and_environment():
  base = {"XLA_FLAGS": "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8",
          "PATH": "/bin"}
  env = launch.child_env(base, 2, "127.0.0.1:1234", 3, 1)
  assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"
  assert env["JAX_PLATFORMS"] == "cpu" and env["PATH"] == "/bin"
  assert (env["MOVENERF_COORDINATOR_ADDRESS"], env["MOVENERF_NUM_PROCESSES"],
          env["MOVENERF_PROCESS_ID"]) == ("127.0.0.1:1234", "3", "1")
  assert launch.child_env({"JAX_PLATFORMS": "cuda"}, 1, "h:1", 2, 0)["JAX_PLATFORMS"] == "cuda"
  assert launch.child_env({}, 4, "h:1", 2, 0)["XLA_FLAGS"] == (
      "--xla_force_host_platform_device_count=4")

  train = launch.child_command("movenerf.train", ["--workdir", "w"], "127.0.0.1:1234", 3, 2)
  assert train == [sys.executable, "-m", "movenerf.train", "--workdir", "w",
                   "--config.train.distributed=true",
                   "--config.train.coordinator_address=127.0.0.1:1234",
                   "--config.train.num_processes=3", "--config.train.process_id=2"]
  # Other programs: the environment only.
  assert launch.child_command("pkg.tool", ["-x"], "h:1", 3, 2) == [
      sys.executable, "-m", "pkg.tool", "-x"]
  assert launch.child_command("dir/s.py", [], "h:1", 3, 2) == [sys.executable, "dir/s.py"]
  assert 0 < launch.free_port() < 65536


def test_output_is_prefixed_and_all_zero_exits_zero(tmp_path):
  script = _script(tmp_path, (
      "print(f'hello {ID} of {os.environ[\"MOVENERF_NUM_PROCESSES\"]} at '\n"
      "      f'{os.environ[\"MOVENERF_COORDINATOR_ADDRESS\"]} '\n"
      "      f'{os.environ[\"XLA_FLAGS\"]} {os.environ[\"JAX_PLATFORMS\"]}')\n"
      "print(f'warn {ID}', file=sys.stderr)\n"
      "sys.stdout.write('no newline')\n"))
  env = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  out = _run(["--processes", "3", "--devices-per-process", "2", "--port", "23456", "--",
              script], env)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.splitlines()
  for i in range(3):
    assert (f"[p{i}] hello {i} of 3 at 127.0.0.1:23456 "
            "--xla_force_host_platform_device_count=2 cpu") in lines
    assert f"[p{i}] no newline" in lines
    assert f"[p{i}] warn {i}" in out.stderr.splitlines()
  assert len(lines) == 6


def test_a_failed_child_is_named_and_its_code_is_the_launchers(tmp_path):
  script = _script(tmp_path, "sys.exit(3 if ID == 1 else 0)\n")
  out = _run(["--processes", "2", "--", script])
  assert out.returncode == 3
  assert "[launch] p1 exited with code 3" in out.stderr


def test_a_failed_child_stops_the_others_within_the_grace(tmp_path):
  # p0 exits on SIGTERM, p2 ignores it (SIGKILL after the 1 s grace), p1 fails.
  script = _script(tmp_path, (
      "if ID == 2:\n"
      "  signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
      "open(os.path.join(HERE, f'pid{ID}'), 'w').write(str(os.getpid()))\n"
      "if ID == 1:\n"
      "  while len([f for f in os.listdir(HERE) if f.startswith('pid')]) < 3:\n"
      "    time.sleep(0.01)\n"
      "  sys.exit(5)\n"
      "time.sleep(600)\n"))
  start = time.monotonic()
  out = _run(["--processes", "3", "--grace", "1", "--", script], timeout=60)
  took = time.monotonic() - start
  assert out.returncode == 5
  assert "[launch] p1 exited with code 5; stopping the other 2 process(es)" in out.stderr
  assert "[launch] p2 still running 1 s after SIGTERM: SIGKILL" in out.stderr
  assert "p0 still running" not in out.stderr
  assert took < 20, took
  for i in range(3):
    assert _gone(int((tmp_path / f"pid{i}").read_text()))


def test_a_child_killed_by_a_signal_is_named(tmp_path):
  script = _script(tmp_path, (
      "if ID == 0:\n"
      "  os.kill(os.getpid(), signal.SIGKILL)\n"
      "time.sleep(600)\n"))
  out = _run(["--processes", "2", "--grace", "5", "--", script], timeout=60)
  assert out.returncode == 128 + signal.SIGKILL
  assert "[launch] p0 was killed by signal 9 (SIGKILL)" in out.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_are_forwarded_to_every_child(tmp_path, signum):
  script = _script(tmp_path, (
      "def handle(s, frame):\n"
      "  print(f'got {signal.Signals(s).name}', flush=True)\n"
      "  sys.exit(0)\n"
      "signal.signal(signal.SIGTERM, handle)\n"
      "signal.signal(signal.SIGINT, handle)\n"
      "open(os.path.join(HERE, f'ready{ID}'), 'w').close()\n"
      "time.sleep(600)\n"))
  proc = _launch(["--processes", "2", "--", script])
  deadline = time.monotonic() + 30
  while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
    assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
    time.sleep(0.02)
  proc.send_signal(signum)
  out, err = proc.communicate(timeout=30)
  name = signal.Signals(signum).name
  assert proc.returncode == 0, err
  assert f"[launch] {name}: forwarding it to 2 process(es)" in err
  assert sorted(out.splitlines()) == [f"[p0] got {name}", f"[p1] got {name}"]


def test_usage_errors():
  out = _run(["--processes", "2"])
  assert out.returncode == 2 and "give the program after --" in out.stderr
  out = _run(["--processes", "0", "--", "x"])
  assert out.returncode == 2 and "--processes must be at least 1" in out.stderr
