"""Calibration: one estimator class per method in one registry (calibrators), fitting and auto (fitting), a system on
dev (dev)."""
