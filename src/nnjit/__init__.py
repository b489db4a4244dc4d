"""nnjit: a deep-learning compiler."""
