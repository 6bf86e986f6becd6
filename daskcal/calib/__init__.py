"""Calibration products: PhotoCalib, bounded fields, SkyWcs, backgrounds, lookup tables."""
