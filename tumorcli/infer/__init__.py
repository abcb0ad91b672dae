"""Inference: load a model, run it over a volume, assemble the output."""
