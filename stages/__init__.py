"""The pipeline's stage scripts, one per ``dvc.yaml`` stage: ``python -m stages.<name> --help``.

Each is thin (parse arguments, load its params, call :mod:`speech_calibration`, write); the library
does the work. A stage never imports another stage (``tests/test_layering.py``).
"""
