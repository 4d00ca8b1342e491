"""The packaged config ``movenerf/configs/gnt_move.py`` (its docstring lists the variants),
re-exported so that ``--config experiments/gnt_move.py:VARIANT`` works in a checkout;
``--config gnt_move:VARIANT`` loads the same config wherever movenerf is installed."""

from movenerf.configs.gnt_move import VARIANTS, get_config  # noqa: F401
