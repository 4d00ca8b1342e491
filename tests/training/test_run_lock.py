"""One training per workdir (movenerf.training.run_lock): a second one is refused with a
message naming the holder, and a killed holder leaves nothing stuck."""

import signal
import subprocess
import sys

import pytest

from movenerf.training import run_lock
from movenerf.validation import UsageError

HOLD = """
import sys, time
from movenerf.training import run_lock
lock = run_lock.RunLock(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_second_holder_is_refused_and_a_killed_holder_frees_it(tmp_path):
  holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)],
                            stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=rf"^--workdir {tmp_path} is in use by another "
                       rf"training \(process {holder.pid} on .+, started .+\)"):
      run_lock.RunLock(str(tmp_path))
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with run_lock.RunLock(str(tmp_path)):  # kill -9 released it
    with pytest.raises(UsageError, match="is in use"):
      run_lock.RunLock(str(tmp_path))
  run_lock.RunLock(str(tmp_path)).release()  # and so did the with block


def test_object_store_workdirs_lock_a_local_file(tmp_path, monkeypatch):
  monkeypatch.setenv("MOVENERF_CACHE", str(tmp_path))
  path = run_lock.lock_file("s3://bucket/runs/a")
  assert path.is_relative_to(tmp_path) and path != run_lock.lock_file("s3://bucket/runs/b")
  with run_lock.RunLock("s3://bucket/runs/a"):
    run_lock.RunLock("s3://bucket/runs/b").release()
    with pytest.raises(UsageError, match="s3://bucket/runs/a is in use"):
      run_lock.RunLock("s3://bucket/runs/a")
