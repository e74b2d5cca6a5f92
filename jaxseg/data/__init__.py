"""Data: file-format sources, preprocessing, augmentation, Grain pipelines, synthetic data."""
