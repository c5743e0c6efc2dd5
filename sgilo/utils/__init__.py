"""Small shared helpers: shape checks, per-sample random generators, image I/O."""
