"""The experiment configs, shipped with the package, and how to load them.

Each config module (``gnt``, ``gnt_move``, ``decoupled_nerf``) has ``VARIANTS`` and
``get_config(variant) -> ConfigDict`` (locked); its docstring gives every variant's
command and expected result. ``base`` builds config sections from the library's
dataclasses.

A config spec is ``NAME[:VARIANT]`` or ``PATH.py[:VARIANT]``:

  gnt_move:tiny                 the packaged module ``movenerf.configs.gnt_move``
  experiments/gnt_move.py:tiny  a config file (any file with a ``get_config``)

so ``--config gnt_move:tiny`` works wherever the package is installed, and
``--config experiments/gnt_move.py:tiny`` in a checkout (``experiments/*.py`` re-export
these modules). Programs define the flag with :func:`define_config_flag`, which keeps
``ml_collections``' ``--config.key=value`` overrides (strict: the config is locked, an
unknown key is an error).

Importing this package needs only the core install; loading a config imports the
modules its sections are built from (``movenerf.data.pipeline``: the ``data`` extra).
"""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import pkgutil
import re
import types
from typing import Any

from absl import flags
import ml_collections
# The implementation module: its file parser and flag class are those of DEFINE_config_file.
from ml_collections.config_flags import config_flags

__all__ = ["NOT_CONFIGS", "define_config_flag", "is_name", "load", "load_module", "names"]

# Modules of this package that are no config.
NOT_CONFIGS = ("base",)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def names() -> list[str]:
  """The packaged config names (``load(name)`` takes them), sorted."""
  return sorted(m.name for m in pkgutil.iter_modules(__path__)
                if not m.name.startswith("_") and m.name not in NOT_CONFIGS)


def is_name(source: str) -> bool:
  """Whether ``source`` (a spec without its ``:VARIANT``) names a packaged config rather
  than a file: a Python identifier, no ``/`` and no ``.py``."""
  return _NAME.fullmatch(source) is not None


def load_module(source: str) -> types.ModuleType:
  """The config module of a packaged name (``gnt_move``) or a file (``dir/x.py``).

  Raises:
    ValueError: an unknown name (the message lists the known ones).
    FileNotFoundError: no such file.
  """
  if is_name(source):
    if source not in names():
      raise ValueError(f"unknown config {source!r}; packaged configs: {', '.join(names())} "
                       "(or give a file, e.g. experiments/gnt_move.py)")
    return importlib.import_module(f"{__name__}.{source}")
  path = pathlib.Path(source).expanduser()
  if not path.is_file():
    raise FileNotFoundError(f"no config file {source!r}")
  spec = importlib.util.spec_from_file_location(f"movenerf_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load(spec: str, lock: bool = True) -> ml_collections.ConfigDict:
  """The config of a spec ``NAME[:VARIANT]`` or ``PATH.py[:VARIANT]`` (no variant: the
  module's default), locked unless ``lock=False``.

  >>> load("gnt_move:tiny").model.moe.num_experts
  4

  Raises:
    ValueError: an unknown name or variant.
    FileNotFoundError: no such file.
  """
  source, *variant = spec.split(":", 1)
  config = load_module(source).get_config(*variant)
  if lock:
    config.lock()
  return config


class _SpecParser(config_flags.ConfigFileFlagParser):
  """Packaged names through :func:`load`; files as ``ml_collections`` loads them."""

  def parse(self, path):
    if not isinstance(path, str) or not is_name(path.split(":", 1)[0]):
      return super().parse(path)
    return load(path, lock=self._lock_config)


def define_config_flag(name: str = "config", default: str | None = None,
                       help_string: str = "experiment config: NAME:VARIANT (packaged, e.g. "
                       "gnt_move:tiny) or FILE.py:VARIANT", flag_values: Any = None,
                       lock_config: bool = True, sys_argv: list[str] | None = None) -> Any:
  """Defines an absl flag ``--NAME`` taking a config spec (see :func:`load`), with
  ``--NAME.key=value`` overrides as ``ml_collections.config_flags.DEFINE_config_file``.

  A file path is loaded exactly as ``DEFINE_config_file`` loads it; a name loads the
  packaged module. With ``lock_config`` (the default) the config is locked, so an
  override of an unknown key is an error.

  Args:
    name: flag name.
    default: default spec.
    help_string: flag help.
    flag_values: absl ``FlagValues`` (default ``absl.flags.FLAGS``).
    lock_config: lock the loaded config.
    sys_argv: the command line to find overrides in (default ``sys.argv``).

  Returns:
    The flag holder (``.value`` is the ConfigDict).
  """
  flag_values = flags.FLAGS if flag_values is None else flag_values
  # The flag class of DEFINE_config_file, given the parser above.
  flag = config_flags._ConfigFlag(  # pylint: disable=protected-access
      parser=_SpecParser(name=name, lock_config=lock_config),
      serializer=flags.ArgumentSerializer(), name=name, default=default,
      help_string=help_string, flag_values=flag_values, sys_argv=sys_argv)
  return flags.DEFINE_flag(flag, flag_values)
