"""Training: data from configs, optimiser, the sharded train step, checkpoints, the loop."""
