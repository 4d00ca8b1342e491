"""Config sections from the library's dataclasses: ``movenerf/configs/base.py``,
re-exported for the config files of a checkout."""

from movenerf.configs.base import changed_fields, defaults, from_dataclass  # noqa: F401
