"""``dvc.yaml`` tells the truth: each stage's code deps are exactly what its script executes, its params exactly the
keys its code reads (checked on every stage but the evaluation sets', which the shrunk study has none of), and its
paths are the ones ``speech_calibration/layout.py`` spells.

The static checks read the source and ``dvc.yaml`` (quick tier). The slow ones run the real ``dvc`` on the
shrunk study (``study`` fixture, tests/conftest.py): editing one library module makes ``dvc status`` name
exactly the stages that import it, and a ``tiny_model.*`` change leaves a study on another model up to date.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from speech_calibration import layout, params
from tests.dvc_helpers import commit_all, copy_repo, dvc, edit_params
from tests.import_graph import ROOT, module_closure, relative

CODE_PREFIXES = ("speech_calibration/", "stages/")
STAGE_SCRIPT = re.compile(r"python -m stages\.(\w+)")


def stage_definitions(dvc_yaml: Path = ROOT / "dvc.yaml") -> dict[str, dict]:
    """Each stage's definition (a ``foreach`` stage's ``do`` block), by name."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def script_of(spec: dict) -> Path:
    match = STAGE_SCRIPT.search(spec["cmd"])
    assert match, f"cmd {spec['cmd']!r} does not run a stage script (python -m stages.<name>)"
    return ROOT / "stages" / f"{match.group(1)}.py"


def code_dep_problems(dvc_yaml: Path = ROOT / "dvc.yaml") -> list[str]:
    """Every stage whose code deps differ from its script's import closure, with the lines to add or drop."""
    problems = []
    for name, spec in stage_definitions(dvc_yaml).items():
        declared = {d for d in spec.get("deps", []) if isinstance(d, str) and d.startswith(CODE_PREFIXES)}
        needed = set(relative(module_closure(script_of(spec))))
        if missing := sorted(needed - declared):
            problems.append(f"{name}: add to deps {missing}")
        if extra := sorted(declared - needed):
            problems.append(f"{name}: drop from deps {extra} (its script never imports them)")
    return problems


def test_every_stage_depends_on_exactly_the_code_it_runs():
    assert code_dep_problems() == []


def test_a_missing_or_extra_code_dep_is_caught(tmp_path):
    """The check fails on a deliberate break: one dep dropped, one module the stage never imports added."""
    text = (ROOT / "dvc.yaml").read_text()
    broken = yaml.safe_load(text)
    evaluate = broken["stages"]["evaluate"]["do"]
    evaluate["deps"].remove("speech_calibration/stats/metrics.py")
    evaluate["deps"].append("speech_calibration/model/training.py")
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(broken, sort_keys=False))
    problems = code_dep_problems(path)
    assert "evaluate: add to deps ['speech_calibration/stats/metrics.py']" in problems
    assert any(p.startswith("evaluate: drop from deps ['speech_calibration/model/training.py']") for p in problems)


EVAL_SET = "mine"  # an evaluation set's name, for the eval-set stages' paths


def _expand(path: str, item: str) -> str:
    defaults = params.load(ROOT / "params.yaml")
    for var, value in (("${item.set}", EVAL_SET), ("${item.seed}", "42"), ("${key}", EVAL_SET), ("${item}", item),
                       ("${model.name_or_path}", defaults.model.name_or_path)):
        path = path.replace(var, value)
    return path


def _declared_paths(spec: dict) -> list[str]:
    out = [d for d in spec.get("deps", []) if not d.startswith(CODE_PREFIXES)]
    for key in ("outs", "metrics", "plots"):
        out += [next(iter(e)) if isinstance(e, dict) else e for e in spec.get(key, [])]
    return out


def layout_paths(seed: int, set_name: str) -> set[str]:
    """Every file or folder the layout module spells for one seed, the reference systems and one extra set."""
    seed_files = layout.seed_files(seed)
    names = {layout.seed_system(seed), layout.ZEROSHOT}
    paths = {
        layout.SPLIT_DIR, layout.DATA_METRICS, layout.CONDITIONS_DIR, layout.conditions_csv(), layout.TINY_MODEL_DIR,
        layout.adapter_dir(seed), layout.train_live_dir(seed) / "metrics.json",
        *(layout.train_curve(seed, c) for c in layout.TRAIN_CURVES),
        layout.BASELINES_DIR, layout.baselines_set_dir(set_name), layout.CONDITIONS_PREDICTIONS_DIR,
        layout.CALIBRATORS_DIR, layout.REFERENCE_CALIBRATORS_DIR, layout.REFERENCES_METRICS_DIR,
        layout.REFERENCES_EVALUATION_DIR, layout.EVALUATION_DIR, layout.SUMMARY_JSON, layout.SUMMARY_TXT, layout.HEADLINE_DIR,
        layout.CONDITIONS_JSON, layout.CONDITIONS_TABLES_DIR,
        seed_files.calibrator, seed_files.calibration_json, seed_files.optimal_temp, seed_files.test_json,
        seed_files.calibration_json.parent, seed_files.test_json.parent, seed_files.evaluation_dir,
        seed_files.predictions("dev"), seed_files.predictions("test"), seed_files.content_free("dev"),
        seed_files.reliability("dev", "csv"), seed_files.reliability("dev", "png"),
        seed_files.reliability("test", "csv"), seed_files.reliability("test", "png"),
    }
    names.add(layout.ENSEMBLE)
    paths |= {layout.predictions_dir(n) for n in names} | {layout.conditions_predictions_dir(n) for n in names}
    paths |= {layout.SEED_PREDICTIONS_DIR, layout.SEED_CONDITIONS_PREDICTIONS_DIR}
    paths |= {layout.SUMMARY_PLOTS_DIR / f"{n}.{e}" for n in ("reliability_pooled", "per_seed") for e in ("csv", "png")}
    paths.add(layout.SUMMARY_PLOTS_DIR / "risk_coverage.csv")
    paths |= {layout.CONDITIONS_PLOTS_DIR / f"{n}.{e}" for n in ("psychometric_duration", "psychometric_snr",
                                                                  "per_condition") for e in ("csv", "png")}
    paths |= {layout.CONDITIONS_PLOTS_DIR / f"sensitivity_{d}.csv" for d in ("duration", "snr")}
    paths |= {layout.CONDITIONS_PLOTS_DIR / f"calibration_{d}.csv" for d in ("duration", "snr", "reverb", "band")}
    paths.add(layout.CONDITIONS_PLOTS_DIR / "calibration_under_shift.png")
    paths |= {layout.seed_predictions_root(), layout.LEARNING_CURVE_JSON, layout.LEARNING_CURVE_TXT,
              layout.LEARNING_CURVE_CSV, layout.LEARNING_CURVE_PNG}
    paths |= {layout.eval_set_dir(EVAL_SET), layout.EVAL_SETS_PREDICTIONS_DIR / EVAL_SET, layout.EVAL_SETS_METRICS_DIR,
              layout.eval_set_metrics(EVAL_SET), *(layout.eval_set_predictions_dir(EVAL_SET, n)
                                                    for n in (*names, layout.BASELINES))}
    return {Path(p).as_posix() for p in paths}


USER_FOLDERS = {("eval_set", "${item}"), ("prepare", "${data.corpus}")}  # your folders (params), not the pipeline's


def test_dvc_yaml_paths_are_the_layout_modules():
    seed, set_name = 42, layout.CONDITIONS_SET
    known = layout_paths(seed, set_name)
    strays = []
    for name, spec in stage_definitions().items():
        item = set_name if name.startswith("baselines_") else str(seed)
        declared = [p for p in _declared_paths(spec) if (name, p) not in USER_FOLDERS]
        strays += [f"{name}: {p}" for p in declared if _expand(p, item) not in known]
    assert strays == [], "dvc.yaml names paths that speech_calibration/layout.py does not spell"


def test_the_embedded_model_is_the_tiny_model_stage_output():
    assert params.load(ROOT / "params.yaml").model.name_or_path == layout.TINY_MODEL_DIR.as_posix()
    assert stage_definitions()["tiny_model"]["outs"] == [layout.TINY_MODEL_DIR.as_posix()]


# ------------------------------------------------------------------------------------ real dvc
def changed_stages(repo: Path) -> set[str]:
    """The stages ``dvc status`` reports as changed."""
    out = dvc("status", "--json", cwd=repo).stdout
    return set(json.loads(out[out.index("{"):]) if "{" in out else {})


def importers(repo: Path, module: str) -> set[str]:
    """The stage names (``train@42`` ...) whose script's import closure holds ``module``."""
    listed = dvc("stage", "list", "--name-only", cwd=repo).stdout.split()
    definitions = stage_definitions(repo / "dvc.yaml")
    return {name for name in listed
            if module in relative(module_closure(script_of(definitions[name.split("@")[0]])))}


@pytest.mark.slow
@pytest.mark.parametrize("module", ["speech_calibration/calibration/fitting.py", "speech_calibration/model/forward.py",
                                    "speech_calibration/stats/resampling.py", "speech_calibration/data/schema.py"])
def test_editing_a_library_module_reruns_exactly_its_importers(study, tmp_path, module):
    repo = copy_repo(study, tmp_path / "repo")
    assert changed_stages(repo) == set()
    with (repo / module).open("a") as f:
        f.write("\n# an edit that DVC must notice\n")
    expected = importers(repo, module)
    assert expected, f"no stage imports {module}"
    assert changed_stages(repo) == expected


@pytest.mark.slow
def test_tiny_model_change_leaves_a_study_on_another_model_up_to_date(study, tmp_path):
    repo = copy_repo(study, tmp_path / "repo")
    shutil.copytree(repo / layout.TINY_MODEL_DIR, repo / "models/other-qwen2-audio")
    edit_params(repo, {"model.name_or_path": "models/other-qwen2-audio"})
    # The other folder holds the same model, so every output stands; record the new dependency without re-running.
    dvc("commit", "--force", cwd=repo)
    commit_all(repo, "study on another local model folder")
    assert changed_stages(repo) == set()
    edit_params(repo, {"tiny_model.window_s": 8.0})
    assert changed_stages(repo) == {"tiny_model"}


# ------------------------------------------------------------------------------------------------ params truth
class _Recording:
    """A view of a Params (or one of its sections) that records the dotted key of every value read through it."""

    def __init__(self, obj, key: str, read: set[str]):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_key", key)
        object.__setattr__(self, "_read", read)

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        key = f"{self._key}.{name}" if self._key else name
        if dataclasses.is_dataclass(value):
            return _Recording(value, key, self._read)
        if not name.startswith("_") and not callable(value):
            self._read.add(key)
        return value


def _leaves(obj, key: str) -> set[str]:
    """The dotted keys of every non-section value under ``obj`` (a Params section)."""
    if not dataclasses.is_dataclass(obj):
        return {key}
    return set().union(*(_leaves(getattr(obj, f.name), f"{key}.{f.name}") for f in dataclasses.fields(obj)))


# params a stage lists whole although which of their keys it reads depends on another key (DVC cannot declare keys
# conditionally): prepare reads data.synthetic, data.csv or data.presplit, as data.source says
PARTLY_READ = {("prepare", "data")}


def _params_problems(stage: str, declared: list[str], read: set[str], defaults) -> list[str]:
    def covers(outer: str, inner: str) -> bool:
        return inner == outer or inner.startswith(outer + ".")

    problems = [f"{stage}: reads {key}, which its params do not list" for key in sorted(read)
                if not any(covers(d, key) for d in declared)]
    for entry in declared:
        value = defaults
        for part in entry.split("."):
            value = getattr(value, part)
        unread = sorted(leaf for leaf in _leaves(value, entry)
                        if not any(covers(r, leaf) or covers(leaf, r) for r in read))
        if unread and (stage, entry) not in PARTLY_READ:
            problems.append(f"{stage}: lists {entry}, but never reads {', '.join(unread)}")
    return problems


@pytest.mark.slow
def test_every_stage_lists_exactly_the_params_it_reads(study, tmp_path, monkeypatch):
    """Each stage of the shrunk study, run in this process on a copy with ``params.load`` handing out a recording
    view: every key it reads is in its dvc.yaml ``params`` (else ``dvc exp run -S key=...`` leaves it stale), and every
    key listed is read (else changing it re-runs the stage for nothing). One worker, so that no read happens in a
    child process. Not covered: the evaluation sets' stages (the study has none), and a key read inside a method of
    a params section (not through the view)."""
    import importlib

    from speech_calibration import cli
    from speech_calibration.model import training
    from speech_calibration.parallel import WORKERS_ENV

    repo = copy_repo(study, tmp_path / "repo")
    monkeypatch.chdir(repo)
    monkeypatch.setenv(WORKERS_ENV, "1")
    load, plain_asdict = params.load, dataclasses.asdict
    read: set[str] = set()

    def recording_asdict(obj, *args, **kwargs):  # a section copied whole (train_info.json) is read whole
        if isinstance(obj, _Recording):
            read.update(_leaves(obj._obj, obj._key))
            obj = obj._obj
        return plain_asdict(obj, *args, **kwargs)

    monkeypatch.setattr(params, "load", lambda path="params.yaml": _Recording(load(path), "", read))
    monkeypatch.setattr(dataclasses, "asdict", recording_asdict)
    monkeypatch.setattr(training, "asdict", recording_asdict)
    defaults, raw = load(repo / "params.yaml"), yaml.safe_load((repo / "params.yaml").read_text())
    problems, ran = [], []
    for name, spec in yaml.safe_load((repo / "dvc.yaml").read_text())["stages"].items():
        if "matrix" in spec:
            continue  # the evaluation sets' stages: none in the study
        items = spec.get("foreach", [None])
        if isinstance(items, str):  # ${seeds}, ${baselines.score_conditions}, ${eval_sets}: from params.yaml
            items = functools.reduce(lambda value, part: value[part], items[2:-1].split("."), raw)
        if not items:
            continue  # no evaluation set
        spec = spec.get("do", spec)
        module, *argv = spec["cmd"].replace("${item}", str(list(items)[0])).split()[2:]
        read.clear()
        cli.run(importlib.import_module(module).main, argv)
        problems += _params_problems(name, [p for p in spec.get("params", []) if isinstance(p, str)], set(read), defaults)
        ran.append(name)
    assert len(ran) >= 17, ran  # every stage of the pipeline but the evaluation sets'
    assert problems == []
