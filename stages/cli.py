"""What every stage CLI shares: one-line user errors, logging, and the ``main`` wrapper.

A user's mistake (bad params, a malformed CSV, a missing file) is raised as :class:`UserError`
and ends the process with one line on stderr and exit status 2, no traceback::

    error: data/processed/grouped_split/dev_metadata.csv row 17: label 'speech?' is not one of SPEECH, NONSPEECH
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

log = logging.getLogger("stages")


class UserError(Exception):
    """An error caused by the user's input; printed as one line, never as a traceback."""


def setup_logging() -> None:
    level = os.environ.get("STAGES_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    # Libraries are chatty at INFO; keep our own messages readable.
    for noisy in ("httpx", "urllib3", "filelock", "matplotlib", "PIL", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parser(description: str, *, params: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the ``--params`` option every stage takes."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    if params:
        p.add_argument("--params", default="params.yaml", help="the params file (default: %(default)s)")
    return p


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a stage's ``main``; turn a :class:`UserError` into one line on stderr and exit 2."""
    setup_logging()
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
