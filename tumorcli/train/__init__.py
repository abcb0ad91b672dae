"""Training: data, the visible loops, checkpoints."""
