"""The packaged config ``movenerf/configs/decoupled_nerf.py`` (its docstring lists the variants),
re-exported so that ``--config experiments/decoupled_nerf.py:VARIANT`` works in a checkout;
``--config decoupled_nerf:VARIANT`` loads the same config wherever movenerf is installed."""

from movenerf.configs.decoupled_nerf import VARIANTS, get_config  # noqa: F401
