"""The packaged config ``movenerf/configs/gnt.py`` (its docstring lists the variants),
re-exported so that ``--config experiments/gnt.py:VARIANT`` works in a checkout;
``--config gnt:VARIANT`` loads the same config wherever movenerf is installed."""

from movenerf.configs.gnt import TINY_MODEL, VARIANTS, get_config  # noqa: F401
