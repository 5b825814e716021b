"""Stage ``ensemble``: the fine-tuned seeds as one system, their answer logits averaged clip by clip.

Reads every seed's predictions (``predictions/seeds/seed_<s>/``, ``predictions/conditions/seeds/seed_<s>/``) and
writes the ensemble's in the same format (``predictions/ensemble/``, ``predictions/conditions/ensemble/``): the
mean of the seeds' ``logit_A`` and ``logit_B``, so its log-odds are the mean of theirs
(:mod:`speech_calibration.model.ensemble` says why). The ``references`` stage then fits its calibrator on dev
and evaluates it on test like any system (``evaluate.references`` lists ``ensemble``). Params: ``seeds``.

    python -m stages.ensemble
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from speech_calibration import params
from speech_calibration.cli import parser, run
from speech_calibration.model.ensemble import write_ensemble

log = logging.getLogger("stages.ensemble")


def main(argv: Sequence[str] | None = None) -> None:
    args = parser(__doc__).parse_args(argv)
    config = params.load(args.params)
    written = write_ensemble(config.seeds)
    log.info("ensemble of %d seeds: %s", len(config.seeds), ", ".join(f"{k} {n} clips" for k, n in written.items()))


if __name__ == "__main__":
    run(main)
