"""The names of the calibration methods: the one list that ``params.yaml``, the registry and the reports share.

A leaf module with no imports, so that the params loader can check ``calibration.method`` without
importing the calibrators (and so without making every stage depend on their code).
``tests/test_calibration.py`` checks that the registry in :mod:`.calibrators` holds exactly
:data:`FITTED`.
"""
from __future__ import annotations

FITTED = ("none", "temperature", "platt", "beta", "isotonic", "contextual", "batch")  # what a fitted calibrator can be
AUTO = "auto"  # choose among FITTED (but batch) by leave-one-group-out NLL on dev
METHODS = ("temperature", "platt", "beta", "isotonic", "contextual", "batch", "none", AUTO)  # what calibration.method accepts
LABEL_FREE = ("none", "contextual", "batch")  # need no dev labels
