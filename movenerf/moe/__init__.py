"""Mixture-of-experts parts of GNT-MoVE: router, capacity dispatch, experts, losses.

The layer (:class:`MoVEFeedForward`) is usable on its own: its docstring gives the RNG
streams and an example; its auxiliaries come back in the ``'moe'`` collection of each
``apply`` (:func:`total_diversity_loss`, :func:`moe_layers`).
"""

from movenerf.moe.config import MoEConfig
from movenerf.moe.dispatch import compute_capacity, make_dispatcher
from movenerf.moe.experts import FeedForwardExperts
from movenerf.moe.layer import (MOE_COLLECTION, MoVEFeedForward, moe_layers,
                                stacked_router_probs, total_diversity_loss)
from movenerf.moe.losses import consistency_loss, diversity_loss
from movenerf.moe.router import CosineRouter, RouterOutput

__all__ = [
    "MOE_COLLECTION",
    "CosineRouter",
    "FeedForwardExperts",
    "MoEConfig",
    "MoVEFeedForward",
    "RouterOutput",
    "compute_capacity",
    "consistency_loss",
    "diversity_loss",
    "make_dispatcher",
    "moe_layers",
    "stacked_router_probs",
    "total_diversity_loss",
]
