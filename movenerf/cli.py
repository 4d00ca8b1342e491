"""How movenerf's programs fail: one line on standard error, a meaningful exit status.

Every program (``movenerf.train``, ``movenerf.eval``, the tools) runs its ``main``
through :func:`run`:

- a bad flag, config key or value, a config file that does not load, or a path that
  cannot be used (:class:`UsageError`, and any error while the flags are parsed) prints
  ``PROG: error: MESSAGE`` and exits with status 2, before anything is written;
- a failure while the program runs (a storage error, a checkpoint that cannot be saved,
  a diverged run: :class:`RunError`, or anything unexpected) prints ``PROG: MESSAGE``
  and exits with status 1;
- ``--verbose`` adds the traceback to either.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
import traceback
from typing import Any, Callable, Sequence

from absl import app, flags

from movenerf.validation import UsageError

__all__ = ["UsageError", "RunError", "config_check", "run", "fail"]

USAGE_EXIT = 2
RUNTIME_EXIT = 1


class RunError(RuntimeError):
  """A failure while a program runs (the message says what was kept)."""


def _message(error: BaseException) -> str:
  """The error's text on one line (the text a KeyError quotes, unquoted)."""
  if len(error.args) == 1 and isinstance(error.args[0], BaseException):
    return _message(error.args[0])
  text = str(error.args[0]) if len(error.args) == 1 else (str(error) or type(error).__name__)
  if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
    try:  # a KeyError's text, quoted (and escaped) once more by str()
      text = str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
      pass
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return " ".join(lines)


def _unknown_key(error: BaseException, argv: Sequence[str]) -> str | None:
  """For a ``--config.a.b=value`` override of a key the config lacks: one line naming
  the override and the closest key (None for other errors)."""
  text = _message(error)
  found = re.fullmatch(r"'?([\w-]+)'?(?:\s+Did you mean \"([^\"]+)\".*)?", text)
  if not found:
    return None
  key, suggestion = found.groups()
  for arg in argv:
    name = arg.split("=", 1)[0]
    if name.startswith("--") and name.endswith("." + key):
      hint = f"; did you mean {suggestion!r}?" if suggestion else ""
      return f"{name}: the config has no key {key!r}{hint}"
  return None


def _verbose() -> bool:
  return "verbose" in flags.FLAGS and flags.FLAGS.is_parsed() and flags.FLAGS.verbose


def fail(prog: str, error: BaseException, status: int) -> None:
  """Prints ``error`` for ``prog`` (with the traceback under ``--verbose``) and exits."""
  if _verbose():
    traceback.print_exception(error, file=sys.stderr)
  prefix = f"{prog}: error: " if status == USAGE_EXIT else f"{prog}: "
  print(prefix + _message(error), file=sys.stderr, flush=True)
  sys.exit(status)


def define_flags(specs: Sequence[tuple[str, str, Any, str]]) -> dict[str, Any]:
  """Defines absl flags from ``(kind, name, default, help)`` rows, kind one of string,
  integer, float, bool, multi (a repeatable string); returns name -> flag holder."""
  define = {"string": flags.DEFINE_string, "integer": flags.DEFINE_integer,
            "float": flags.DEFINE_float, "bool": flags.DEFINE_bool,
            "multi": flags.DEFINE_multi_string}
  return {name: define[kind](name, default, text) for kind, name, default, text in specs}


def key_values(pairs: Sequence[str], flag: str = "--option") -> dict[str, str]:
  """``KEY=VALUE`` flag values as a dict (keys and values stripped).

  Raises:
    UsageError: naming the flag and the value without ``=`` or without a key.
  """
  out = {}
  for pair in pairs:
    key, sep, value = pair.partition("=")
    if not sep or not key.strip():
      raise UsageError(f"{flag}={pair}: give KEY=VALUE")
    out[key.strip()] = value.strip()
  return out


def config_check(holder: Any, flag: str = "config") -> Callable[[], None]:
  """A ``check`` for :func:`run` that loads the config of ``holder`` (an absl flag holder
  of a config flag): a file that does not load is one line naming it."""

  def check() -> None:
    try:
      holder.value.to_dict()
    except OSError as e:
      missing = re.search(r"No such file or directory: '([^']+)'", str(e))
      if missing:
        raise UsageError(f"--{flag}: no config file {missing.group(1)}") from None
      raise UsageError(f"--{flag}: {_message(e)}") from None

  return check


def run(main: Callable[[Sequence[str]], Any], prog: str,
        define: Callable[[], None] | None = None,
        check: Callable[[], None] | None = None) -> None:
  """``absl.app.run(main)`` with one-line errors and exit statuses 2 (usage) / 1 (run).

  Args:
    main: the program; it receives the remaining arguments.
    prog: the name errors are printed under (e.g. ``"movenerf.train"``).
    define: defines the program's flags (a config flag parses its default, with the
      command line's overrides, as it is defined).
    check: called right after the flags are parsed (e.g. to load the config file, so
      that a file that does not load is a usage error).
  """
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "print the traceback of an error")
  if define is not None:
    try:
      define()
    except Exception as e:  # pylint: disable=broad-except
      unknown = _unknown_key(e, sys.argv) if isinstance(e, (KeyError, AttributeError)) \
          else None
      fail(prog, UsageError(unknown) if unknown else e, USAGE_EXIT)

  def parse(argv: list[str]) -> list[str]:
    try:
      rest = flags.FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except
      flags.FLAGS.mark_as_parsed()
      unknown = _unknown_key(e, argv) if isinstance(e, (KeyError, AttributeError)) else None
      fail(prog, UsageError(unknown) if unknown else e, USAGE_EXIT)
    if check is not None:
      try:
        check()
      except Exception as e:  # pylint: disable=broad-except
        fail(prog, e, USAGE_EXIT)
    return rest

  def guarded(argv: Sequence[str]) -> Any:
    try:
      return main(argv)
    except UsageError as e:
      fail(prog, e, USAGE_EXIT)
    except KeyboardInterrupt:
      print(f"{prog}: interrupted", file=sys.stderr, flush=True)
      sys.exit(130)
    except SystemExit:
      raise
    except Exception as e:  # pylint: disable=broad-except
      fail(prog, e, RUNTIME_EXIT)

  app.run(guarded, flags_parser=parse)


def _program(target: str, extra: str) -> Callable[[], Any]:
  """A console script that starts ``module:function`` of ``target``; when a dependency of
  the program is not installed, it says which extra installs it (one line, status 1)."""
  module, _, function = target.partition(":")

  def start() -> Any:
    try:
      program = importlib.import_module(module)
    except ImportError as e:
      missing = getattr(e, "name", None) or str(e).rsplit(" ", 1)[-1]
      if missing.split(".")[0] == "movenerf":
        raise
      print(f"{module}: needs {missing}, which is not installed: pip install "
            f"'movenerf[{extra}]'", file=sys.stderr, flush=True)
      sys.exit(RUNTIME_EXIT)
    return getattr(program, function)()

  start.__name__ = start.__qualname__ = module.rsplit(".", 1)[-1]
  start.__doc__ = f"The console script of ``{module}`` (needs ``movenerf[{extra}]``)."
  return start


# The console scripts (setup.cfg's [options.entry_points]).
train = _program("movenerf.train:run", "training")
evaluate = _program("movenerf.eval:run", "training")
build_dataset = _program("movenerf.data.tfds.build:main", "data")
zero_shot = _program("movenerf.tools.zero_shot:run", "training")
bench = _program("movenerf.tools.bench:main", "training")
launch = _program("movenerf.tools.launch:main", "training")
render_view = _program("movenerf.tools.render_view:program", "training")
image_metrics = _program("movenerf.tools.image_metrics:run", "training")
results_table = _program("movenerf.tools.results_table:run", "training")
process_images = _program("movenerf.tools.process_images:program", "sfm")
render_path = _program("movenerf.tools.render_path:program", "training")
check_cameras = _program("movenerf.tools.check_cameras:program", "sfm")
