"""The transformer classifier (pure torch), its attention backends, synthetic data and training."""
