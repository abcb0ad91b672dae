"""Scanner images -> analysis-ready volumes: spatial (registration), intensity (N4, normalise), brain (atlas, mask), pipeline (steps + record)."""
