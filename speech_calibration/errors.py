"""The one exception a user's mistake raises.

Bad params, a malformed CSV or a missing file end the process with one line on stderr that names the
file, the row or key, what is wrong and how to fix it (``speech_calibration.cli.run`` prints it, exit
status 2, no traceback)::

    error: data/processed/grouped_split/dev_metadata.csv row 17: label 'speech?' is not one of SPEECH, NONSPEECH
"""
from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input; printed as one line, never as a traceback."""


class Terminated(BaseException):
    """SIGTERM arrived (``kill``, ``timeout``, a scheduler or container stopping the job): raised in the main thread
    by :func:`speech_calibration.cli.run`'s handler, so that every ``with`` block unwinds and the atomic writes remove
    their temporary files, as on Ctrl-C. A ``BaseException``, so ``except Exception`` does not swallow it."""
