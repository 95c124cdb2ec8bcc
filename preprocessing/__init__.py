"""IQ samples in, per-frame spectral features out."""
