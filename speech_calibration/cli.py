"""What every command line shares (stage scripts, the study's wrappers): logging, ``--params``, and ``run``.

``run`` turns a :class:`speech_calibration.errors.UserError` into one line on stderr and exit status 2,
no traceback; Ctrl-C into "error: interrupted" and 130, SIGTERM into "error: terminated" and 143, after the atomic
writes in progress have removed their temporary files. A command's outputs go in together when it ends without an
error (:func:`speech_calibration.fileio.outputs_together`).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence

from speech_calibration.errors import Terminated, UserError
from speech_calibration.fileio import outputs_together

log = logging.getLogger("speech_calibration")


def setup_logging() -> None:
    """INFO logs of our own modules, quieter third-party loggers, and no warnings we know to be harmless.

    Progress bars (tqdm, ``disable=None``) draw only when stderr is a terminal, so ``dvc queue logs`` and CI
    logs get the log lines without thousands of carriage-return updates.
    """
    # transformers 5 warns that `is_gradient_checkpointing` is deprecated on every from_pretrained of a
    # Qwen2-Audio model (its own code calls it); nothing here uses it.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*deprecated", category=FutureWarning)
    if not sys.stderr.isatty():  # Hugging Face's own bars ("Loading weights") follow the same rule
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
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


def _terminated(signum, frame) -> None:
    raise Terminated


def run(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> None:
    """Run a stage's ``main``; turn a :class:`UserError` into one line on stderr and exit 2, and SIGTERM into
    :class:`~speech_calibration.errors.Terminated` (the ``with`` blocks unwind, as on Ctrl-C), then exit 143.

    Its outputs go in together when it ends (:func:`~speech_calibration.fileio.outputs_together`)."""
    setup_logging()
    # Not under torchrun with several processes: there SIGTERM must end a rank at once, also one waiting inside a
    # collective whose peer died (the main thread in C code would not run a Python handler until it returned).
    install = threading.current_thread() is threading.main_thread() and int(os.environ.get("WORLD_SIZE", "1")) <= 1
    previous = signal.signal(signal.SIGTERM, _terminated) if install else None
    try:
        with outputs_together():  # a stage that stops or fails half-way leaves its previous outputs, all of them
            main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except Terminated:
        print("error: terminated (SIGTERM)", file=sys.stderr)
        raise SystemExit(143) from None
    finally:
        if install:  # a caller that goes on (a test, a notebook) gets its own handler back
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
