r"""Runs a program as N cooperating JAX processes on this machine (multi-host, simulated).

  python -m movenerf.tools.launch --processes 2 --devices-per-process 2 -- \
      movenerf.train --config experiments/gnt_move.py:tiny --workdir runs/mp
  python -m movenerf.tools.launch --processes 2 -- my_script.py --flag=1

Starts ``--processes`` children ``python -m MODULE ARGS...`` (or ``python SCRIPT.py
ARGS...``), process ``i`` of ``N`` with a coordinator on ``127.0.0.1:PORT`` (``--port``,
or a free port). It is for running and testing multi-process code on one machine's CPU:
each child sees ``--devices-per-process`` CPU devices. On a real cluster run the same
training command on every host with the ``train.*`` keys below set (or left to JAX's
detection, as on TPU VMs and SLURM) instead.

How a child learns its place, so that one design serves every program:

* every child gets the environment variables ``MOVENERF_COORDINATOR_ADDRESS``
  (``127.0.0.1:PORT``), ``MOVENERF_NUM_PROCESSES`` and ``MOVENERF_PROCESS_ID``; any
  script can pass them to ``jax.distributed.initialize``;
* ``movenerf.train`` and ``movenerf.eval`` read their config instead, so their children
  also get the flags
  ``--config.train.distributed=true --config.train.coordinator_address=127.0.0.1:PORT
  --config.train.num_processes=N --config.train.process_id=i`` (appended, so they win
  over the same keys in ARGS). No other movenerf program runs as several processes.

Environment of every child: ``XLA_FLAGS`` with
``--xla_force_host_platform_device_count=D`` (replacing that flag, keeping the others),
``JAX_PLATFORMS=cpu`` unless it is set already, and ``PYTHONUNBUFFERED=1`` unless set.

Every line a child writes is printed with the prefix ``[pI] `` (stdout to stdout, stderr
to stderr); the launcher's own lines start with ``[launch] `` (stderr). SIGINT and SIGTERM
to the launcher are forwarded to every child (a second one kills them all). When a child
exits with a non-zero code or is killed by a signal, the launcher prints one line naming
it and its code / signal, sends SIGTERM to the others, SIGKILLs those still running after
``--grace`` seconds, and exits with that child's code (128 + signal number for a signal).
It exits 0 when every child exits 0.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO, Optional, Sequence

# Programs that take the process layout from their config (train.*) besides the
# environment variables.
CONFIG_MODULES = ("movenerf.train", "movenerf.eval")
ENV_COORDINATOR = "MOVENERF_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "MOVENERF_NUM_PROCESSES"
ENV_PROCESS_ID = "MOVENERF_PROCESS_ID"
_DEVICE_COUNT_FLAG = "--xla_force_host_platform_device_count"
_POLL_S = 0.05


def free_port(host: str = "127.0.0.1") -> int:
  """A TCP port that is free now (bound to port 0 and released)."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind((host, 0))
    return s.getsockname()[1]


def child_command(target: str, args: Sequence[str], coordinator: str, num_processes: int,
                  process_id: int) -> list[str]:
  """``python -m MODULE`` (or ``python SCRIPT.py``) with ``args``, plus the config flags
  of the process layout for :data:`CONFIG_MODULES`."""
  if target.endswith(".py") or os.sep in target:
    cmd = [sys.executable, target, *args]
  else:
    cmd = [sys.executable, "-m", target, *args]
  if target in CONFIG_MODULES:
    cmd += ["--config.train.distributed=true",
            f"--config.train.coordinator_address={coordinator}",
            f"--config.train.num_processes={num_processes}",
            f"--config.train.process_id={process_id}"]
  return cmd


def child_env(base: dict, devices: int, coordinator: str, num_processes: int,
              process_id: int) -> dict:
  """``base`` with the module docstring's variables set for process ``process_id``."""
  env = dict(base)
  kept = [f for f in env.get("XLA_FLAGS", "").split()
          if not f.startswith(_DEVICE_COUNT_FLAG)]
  env["XLA_FLAGS"] = " ".join(kept + [f"{_DEVICE_COUNT_FLAG}={devices}"])
  if not env.get("JAX_PLATFORMS"):
    env["JAX_PLATFORMS"] = "cpu"
  env.setdefault("PYTHONUNBUFFERED", "1")
  env[ENV_COORDINATOR] = coordinator
  env[ENV_NUM_PROCESSES] = str(num_processes)
  env[ENV_PROCESS_ID] = str(process_id)
  return env


def describe_exit(code: int) -> str:
  """``exited with code 3`` / ``was killed by signal 9 (SIGKILL)``."""
  if code >= 0:
    return f"exited with code {code}"
  try:
    name = f" ({signal.Signals(-code).name})"
  except ValueError:
    name = ""
  return f"was killed by signal {-code}{name}"


def _death_signal_setter():
  """A function to run in the child before exec (Linux): the child gets SIGKILL when the
  launcher dies, even by SIGKILL, so that no orphan keeps the coordinator port or the
  CPUs. Looked up here, in the parent: the child only calls it."""
  if not sys.platform.startswith("linux"):
    return None
  try:
    prctl = ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None
  return lambda: prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


class Launcher:
  """The children of one launch, their output threads and their shutdown."""

  def __init__(self, commands: Sequence[Sequence[str]], envs: Sequence[dict],
               grace_s: float, out: Optional[IO[str]] = None, err: Optional[IO[str]] = None):
    self.grace_s = grace_s
    out = out or sys.stdout
    self._err = err or sys.stderr
    self._lock = threading.RLock()  # RLock: the signal handler may print mid-print
    self._signals = 0
    self.procs: list[subprocess.Popen] = []
    self._threads: list[threading.Thread] = []
    preexec = _death_signal_setter()
    for i, (cmd, env) in enumerate(zip(commands, envs)):
      # Own session: a Ctrl-C in the terminal reaches the launcher only, which forwards
      # it once; and SIGKILL can take a child's own subprocesses (its process group).
      proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, start_new_session=True,
                              preexec_fn=preexec)
      self.procs.append(proc)
      for pipe, sink in ((proc.stdout, out), (proc.stderr, self._err)):
        t = threading.Thread(target=self._pump, args=(pipe, sink, f"[p{i}] "), daemon=True)
        t.start()
        self._threads.append(t)

  def say(self, text: str) -> None:
    self._write(self._err, f"[launch] {text}\n")

  def _write(self, sink: IO[str], text: str) -> None:
    with self._lock:
      sink.write(text)
      sink.flush()

  def _pump(self, pipe, sink: IO[str], prefix: str) -> None:
    for raw in iter(pipe.readline, b""):
      self._write(sink, prefix + raw.decode("utf-8", "replace").rstrip("\r\n") + "\n")
    pipe.close()

  def _running(self) -> list[tuple[int, subprocess.Popen]]:
    return [(i, p) for i, p in enumerate(self.procs) if p.poll() is None]

  def forward(self, signum: int, frame=None) -> None:
    """Signal handler: the first SIGINT / SIGTERM goes to every child, a second one
    SIGKILLs them."""
    del frame
    self._signals += 1
    running = self._running()
    if self._signals == 1:
      self.say(f"{signal.Signals(signum).name}: forwarding it to "
               f"{len(running)} process(es)")
      for _, p in running:
        _signal(p, signum)
    else:
      self.say(f"{signal.Signals(signum).name} again: killing every process")
      for _, p in running:
        _kill_group(p)

  def stop_others(self) -> None:
    """SIGTERM to every running child, SIGKILL (with its process group) to those still
    running ``grace_s`` later."""
    for _, p in self._running():
      _signal(p, signal.SIGTERM)
    deadline = time.monotonic() + self.grace_s
    while self._running() and time.monotonic() < deadline:
      time.sleep(_POLL_S)
    for i, p in self._running():
      self.say(f"p{i} still running {self.grace_s:g} s after SIGTERM: SIGKILL")
      _kill_group(p)
    for p in self.procs:
      p.wait()

  def wait(self) -> int:
    """Waits for the children (see the module docstring); returns the exit code."""
    failed: Optional[tuple[int, int]] = None
    while True:
      codes = [p.poll() for p in self.procs]
      bad = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if bad:
        failed = bad[0]
        break
      if all(c == 0 for c in codes):
        break
      time.sleep(_POLL_S)
    if failed is not None:
      i, code = failed
      others = len(self._running())
      self.say(f"p{i} {describe_exit(code)}"
               + (f"; stopping the other {others} process(es)" if others else ""))
      self.stop_others()
    for t in self._threads:  # the rest of the output (a grandchild may hold a pipe)
      t.join(timeout=5)
    if failed is None:
      return 0
    return failed[1] if failed[1] > 0 else 128 - failed[1]


def _signal(p: subprocess.Popen, signum: int) -> None:
  try:
    p.send_signal(signum)
  except ProcessLookupError:
    pass


def _kill_group(p: subprocess.Popen) -> None:
  try:
    os.killpg(p.pid, signal.SIGKILL)  # the child leads its own group (start_new_session)
  except (ProcessLookupError, PermissionError):
    _signal(p, signal.SIGKILL)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  if "--" not in argv:
    argv_launch, argv_child = argv, []
  else:
    cut = argv.index("--")
    argv_launch, argv_child = argv[:cut], argv[cut + 1:]
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      usage="python -m movenerf.tools.launch --processes N [options] -- MODULE|SCRIPT.py "
            "[ARGS...]")
  parser.add_argument("--processes", type=int, required=True, help="number of processes")
  parser.add_argument("--devices-per-process", type=int, default=1,
                      help="CPU devices each process sees (XLA_FLAGS "
                           "--xla_force_host_platform_device_count)")
  parser.add_argument("--port", type=int, default=0,
                      help="coordinator port on 127.0.0.1 (default: a free one)")
  parser.add_argument("--grace", type=float, default=30.0,
                      help="seconds the other processes get to exit after SIGTERM when one "
                           "fails, before SIGKILL")
  args = parser.parse_args(argv_launch)
  if not argv_child:
    parser.error("give the program after --: MODULE (or SCRIPT.py) and its arguments")
  if args.processes < 1:
    parser.error(f"--processes must be at least 1, got {args.processes}")
  if args.devices_per_process < 1:
    parser.error(f"--devices-per-process must be at least 1, got {args.devices_per_process}")
  if not 0 <= args.port < 65536:
    parser.error(f"--port must be in [0, 65535], got {args.port}")
  coordinator = f"127.0.0.1:{args.port or free_port()}"
  target, child_args = argv_child[0], argv_child[1:]
  commands = [child_command(target, child_args, coordinator, args.processes, i)
              for i in range(args.processes)]
  envs = [child_env(os.environ, args.devices_per_process, coordinator, args.processes, i)
          for i in range(args.processes)]
  print(f"[launch] {args.processes} process(es) x {args.devices_per_process} device(s), "
        f"coordinator {coordinator}: {' '.join(argv_child)}", file=sys.stderr, flush=True)
  launcher = Launcher(commands, envs, args.grace)
  previous = {s: signal.signal(s, launcher.forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    return launcher.wait()
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)


if __name__ == "__main__":
  sys.exit(main())
