"""Mixture-of-experts parts of GNT-MoVE: router, capacity dispatch, experts, losses."""
