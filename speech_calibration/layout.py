"""Every path the pipeline reads or writes, relative to the project root; ``dvc.yaml`` names the same ones.

``tests/test_dvc_deps.py`` checks that the paths in ``dvc.yaml`` agree with this module, so a folder is
renamed here and in ``dvc.yaml`` together or not at all. A *system* is one thing that answers the
question for every clip: a fine-tuned seed (``seed_42``), the zero-shot model (``zeroshot``) or a
reference detector (``baselines/silero``).

    data/processed/grouped_split/{train,dev,test}_metadata.csv (+ audio/)   prepare
    data/processed/conditions/conditions_metadata.csv (+ audio/)            conditions_render
    models/tiny-qwen2-audio/                                                tiny_model
    models/seed_<s>/                          the LoRA adapter              train
    models/calibrators/seed_<s>.json          the dev-fitted calibrator     calibrate
    models/calibrators/references/<system>.json                             references
    predictions/seeds/seed_<s>/{dev,test}.csv (+ _content_free.csv)        predict
    predictions/<system>/{dev,test}.csv (+ _content_free.csv)              predict_zeroshot, baselines, ensemble
    predictions/conditions/seeds/seed_<s>/conditions.csv                    predict_conditions
    predictions/conditions/<system>/conditions.csv                          predict_conditions_zeroshot, ensemble
    predictions/baselines_<set>/<detector>/<set>.csv                        baselines_conditions
    <your folder>/metadata.csv (+ audio)      an evaluation set (params eval_sets: {<name>: <your folder>})
    data/eval_sets/<name>/metadata.csv        its validated manifest        eval_set
    predictions/eval_sets/<name>/<system>/<name>.csv                        predict_eval_set*, baselines_eval_set
    metrics/eval_sets/<name>.json             every system on the set      evaluate_eval_set
    metrics/learning_curve.{json,txt}, plots/learning_curve/                learning_curve
    metrics/ plots/ evaluation/               metrics, plot data and per-clip tables
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# where stages write: the folders `python -m speech_calibration.tidy` may clean of outputs no stage declares any more
OUTPUT_ROOTS = ("data/processed", "data/eval_sets", "models", "predictions", "evaluation", "metrics", "plots")

# ------------------------------------------------------------------------------------------- data
DATA_DIR = Path("data/processed")
SPLIT_DIR = DATA_DIR / "grouped_split"
DATA_METRICS = Path("metrics/data.json")
CONDITIONS_DIR = DATA_DIR / "conditions"
CONDITIONS_SET = "conditions"  # the condition variants' set name: <set>_metadata.csv, <system dir>/<set>.csv


def split_csv(split: str, root: str | Path = SPLIT_DIR) -> Path:
    """``<root>/<split>_metadata.csv``: the metadata CSV of one split (train, dev, test)."""
    return Path(root) / f"{split}_metadata.csv"


def conditions_csv(name: str = CONDITIONS_SET, root: str | Path = CONDITIONS_DIR) -> Path:
    """``data/processed/conditions/<name>_metadata.csv``: the rendered condition variants."""
    return Path(root) / f"{name}_metadata.csv"


EVAL_SET_INPUT_CSV = "metadata.csv"  # what an evaluation set's folder holds, beside (or above) its audio
EVAL_SETS_DIR = Path("data/eval_sets")


def eval_set_input_csv(folder: str | Path) -> Path:
    """``<folder>/metadata.csv``: the metadata CSV of an evaluation set's own folder (``params.yaml: eval_sets``)."""
    return Path(folder) / EVAL_SET_INPUT_CSV


def eval_set_dir(name: str) -> Path:
    """``data/eval_sets/<name>/``: the validated set (its manifest), written by the ``eval_set`` stage."""
    return EVAL_SETS_DIR / name


def eval_set_csv(name: str) -> Path:
    """``data/eval_sets/<name>/metadata.csv``: the manifest every system scores (audio paths resolved, a hash per clip)."""
    return eval_set_dir(name) / "metadata.csv"


# ------------------------------------------------------------------------------------------ models
TINY_MODEL_DIR = Path("models/tiny-qwen2-audio")
CALIBRATORS_DIR = Path("models/calibrators")
REFERENCE_CALIBRATORS_DIR = CALIBRATORS_DIR / "references"


def seed_system(seed: int) -> str:
    """The system name of a fine-tuned seed: ``seed_42``. The only place that spells it."""
    return f"seed_{seed}"


def names_a_seed(name: str) -> bool:
    """Whether a file or folder name is one of a seed's outputs: ``seed_7``, ``seed_7.json``, ``seed_7_dev_reliability.png``."""
    return re.fullmatch(r"seed_\d+([._].*)?", name) is not None


def adapter_dir(seed: int) -> Path:
    """``models/seed_<seed>/``: the seed's LoRA adapter (``PeftModel.from_pretrained`` opens it)."""
    return Path("models") / seed_system(seed)


def train_info_json(adapter: str | Path) -> Path:
    """``<adapter>/train_info.json``: what trained the adapter in folder ``adapter`` (steps, time, the params it used)."""
    return Path(adapter) / "train_info.json"


def train_live_dir(seed: int) -> Path:
    """``metrics/train/seed_<seed>/``: the seed's dvclive training curves."""
    return Path("metrics/train") / seed_system(seed)


# the curves dvclive writes (training.py logs "train/<name>"); dvc.yaml declares each as a plot with a short title
TRAIN_CURVES = ("loss", "accuracy_epoch", "learning_rate")


def train_curve(seed: int, name: str) -> Path:
    """``metrics/train/seed_<seed>/plots/metrics/train/<name>.tsv``: one dvclive curve (:data:`TRAIN_CURVES`)."""
    return train_live_dir(seed) / "plots" / "metrics" / "train" / f"{name}.tsv"


# ------------------------------------------------------------------------------------- predictions
PREDICTIONS_DIR = Path("predictions")
ZEROSHOT = "zeroshot"
BASELINES = "baselines"
BASELINES_DIR = PREDICTIONS_DIR / BASELINES
CONDITIONS_PREDICTIONS_DIR = PREDICTIONS_DIR / "conditions"


SEEDS = "seeds"  # the fine-tuned seeds' predictions sit one level down, so a stage can read all of them (ensemble)
ENSEMBLE = "ensemble"  # the seeds' mean log-odds, a system of its own (speech_calibration.model.ensemble)
SEED_PREDICTIONS_DIR = PREDICTIONS_DIR / SEEDS
SEED_CONDITIONS_PREDICTIONS_DIR = CONDITIONS_PREDICTIONS_DIR / SEEDS


def predictions_dir(system: str) -> Path:
    """``predictions/seeds/seed_<s>/`` for a fine-tuned seed, else ``predictions/<system>/``: dev.csv, test.csv and
    the content-free logits of one system."""
    return SEED_PREDICTIONS_DIR / system if names_a_seed(system) else PREDICTIONS_DIR / system


def conditions_predictions_dir(system: str) -> Path:
    """``predictions/conditions/seeds/seed_<s>/`` for a fine-tuned seed, else ``predictions/conditions/<system>/``:
    one system's scores of the condition variants."""
    return SEED_CONDITIONS_PREDICTIONS_DIR / system if names_a_seed(system) else CONDITIONS_PREDICTIONS_DIR / system


def baselines_set_dir(set_name: str) -> Path:
    """``predictions/baselines_<set>/``: the detectors' scores of an extra set (a DVC out of its own)."""
    return PREDICTIONS_DIR / f"{BASELINES}_{set_name}"


EVAL_SETS_PREDICTIONS_DIR = PREDICTIONS_DIR / "eval_sets"


def eval_set_predictions_dir(name: str, system: str) -> Path:
    """``predictions/eval_sets/<name>/<system>/``: one system's scores of an evaluation set (``<name>.csv`` inside);
    the detectors' under ``<system>`` = ``baselines/<detector>``, in the folder ``baselines`` of their stage."""
    return EVAL_SETS_PREDICTIONS_DIR / name / system


# ----------------------------------------------------------------------------------- per system
@dataclass(frozen=True)
class SystemFiles:
    """Where one system's calibrate / evaluate files go.

    Fine-tuned seeds (``reference=False``) use the per-file paths that ``dvc.yaml`` lists for each seed;
    reference systems (``zeroshot``, ``baselines/silero`` ...; any may be absent) go under the folders the
    ``references`` stage declares whole.
    """

    system: str
    reference: bool = False

    def predictions(self, split: str) -> Path:
        return predictions_dir(self.system) / f"{split}.csv"

    def content_free(self, split: str = "dev") -> Path:
        return predictions_dir(self.system) / f"{split}_content_free.csv"

    @property
    def calibrator(self) -> Path:
        """The fitted calibrator (``Calibrator.save`` / ``calibrators.load``)."""
        root = REFERENCE_CALIBRATORS_DIR if self.reference else CALIBRATORS_DIR
        return root / f"{self.system}.json"

    @property
    def _metrics(self) -> Path:
        return Path("metrics/references") if self.reference else Path("metrics")

    @property
    def calibration_json(self) -> Path:
        """Dev metrics before and after calibration, and the fitted parameters (an ordinary cached output; the
        declared metrics are the headline files, :func:`headline_json`)."""
        return self._metrics / "calibration" / f"{self.system}.json"

    @property
    def optimal_temp(self) -> Path:
        """The study's ``<system>_optimal_temp.txt``: the temperature as ``%.6f``."""
        return self._metrics / "calibration" / f"{self.system}_optimal_temp.txt"

    @property
    def test_json(self) -> Path:
        return self._metrics / "test" / f"{self.system}.json"

    def reliability(self, split: str, ext: str) -> Path:
        if self.reference:
            return self.evaluation_dir / f"{split}_reliability.{ext}"
        folder = "calibration" if split == "dev" else split
        return Path("plots") / folder / f"{self.system}_{split}_reliability.{ext}"

    @property
    def evaluation_dir(self) -> Path:
        return (REFERENCES_EVALUATION_DIR if self.reference else EVALUATION_DIR) / self.system

    @property
    def test_calibrated_csv(self) -> Path:
        return self.evaluation_dir / "test_calibrated.csv"

    @property
    def per_group_csv(self) -> Path:
        return self.evaluation_dir / "per_group.csv"


def seed_files(seed: int) -> SystemFiles:
    return SystemFiles(seed_system(seed))


# ------------------------------------------------------------------------------------------ reports
EVALUATION_DIR = Path("evaluation")
REFERENCES_EVALUATION_DIR = EVALUATION_DIR / "references"
REFERENCES_METRICS_DIR = Path("metrics/references")
REFERENCES_INDEX = REFERENCES_METRICS_DIR / "systems.json"

SUMMARY_JSON = Path("metrics/summary.json")
SUMMARY_TXT = Path("metrics/summary.txt")
SUMMARY_PLOTS_DIR = Path("plots/summary")
HEADLINE_DIR = Path("metrics/headline")  # the only files dvc.yaml declares as metrics: one per system and series
EVAL_SETS_HEADLINE_DIR = HEADLINE_DIR / "eval_sets"  # metrics/headline/eval_sets/<name>/: the same on each eval set


def headline_json(system: str, series: str, eval_set: str | None = None) -> Path:
    """``metrics/headline/<system>/<series>.json``: a system's headline test metrics, uncalibrated or calibrated
    (``baselines/silero`` -> ``silero/``); with ``eval_set``, on that evaluation set:
    ``metrics/headline/eval_sets/<name>/<system>/<series>.json``."""
    folder = HEADLINE_DIR if eval_set is None else EVAL_SETS_HEADLINE_DIR / eval_set
    return folder / system.rsplit("/", 1)[-1] / f"{series}.json"

CONDITIONS_JSON = Path("metrics/conditions.json")
CONDITIONS_TABLES_DIR = Path("metrics/conditions")
CONDITIONS_PLOTS_DIR = Path("plots/conditions")

LEARNING_CURVE_JSON = Path("metrics/learning_curve.json")  # a plain out (not a dvc metric): per seed, method and size
LEARNING_CURVE_TXT = Path("metrics/learning_curve.txt")
LEARNING_CURVE_PLOTS_DIR = Path("plots/learning_curve")
LEARNING_CURVE_CSV = LEARNING_CURVE_PLOTS_DIR / "learning_curve.csv"
LEARNING_CURVE_PNG = LEARNING_CURVE_PLOTS_DIR / "learning_curve.png"


def seed_predictions_root() -> Path:
    """The folder that holds every seed's predictions folder: the dep of a stage that reads all seeds (``dvc.yaml``
    cannot list one path per seed outside a ``foreach``)."""
    return predictions_dir(seed_system(0)).parent

EVAL_SETS_METRICS_DIR = Path("metrics/eval_sets")  # committed with a .gitkeep, so the aggregate stage's dep exists


def eval_set_metrics(name: str) -> Path:
    """``metrics/eval_sets/<name>.json``: every system on the evaluation set, uncalibrated beside calibrated."""
    return EVAL_SETS_METRICS_DIR / f"{name}.json"
