"""Tests of the ``baselines`` stage: real WAV files in, predictions CSVs in the shared schema out."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_vad import pink_noise, speech_in_noise, white_noise

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.cli import run
from speech_calibration.data import schema
from speech_calibration.data.audio import write_audio
from stages import baselines
from tests.dvc_helpers import dvc_env

ROOT = Path(__file__).resolve().parents[1]
DETECTORS = ("silero", "webrtc")


def _clips(split: str, n: int, seed: int) -> list[dict]:
    """``n`` clips alternating SPEECH (eSpeak NG in noise) and NONSPEECH (noise), 0.2 s to 3 s long."""
    rng = np.random.default_rng(seed)
    texts = ["Hello there, how are you today?", "Seven", "The quick brown fox jumps over the lazy dog."]
    rows = []
    for i in range(n):
        speech = i % 2 == 0
        snr = float(rng.choice([0.0, 10.0, 20.0]))
        if speech:
            x = speech_in_noise(snr, rms=0.01, seed=seed * 100 + i, text=texts[i % 3], voice=("en-us", "en-us+f3")[i % 4 // 2])
            if i % 6 == 4:  # a 0.2 s clip cut from the middle of an utterance
                x = x[len(x) // 2: len(x) // 2 + 3200]
        else:
            dur = float(rng.choice([0.2, 1.0, 3.0]))
            x = (white_noise if i % 4 == 1 else pink_noise)(dur, 0.01, seed * 100 + i)
        clip_id = f"{split}_{i:03d}"
        rows.append({"clip_id": clip_id, "audio_path": f"audio/{clip_id}.wav", "label": "SPEECH" if speech else "NONSPEECH",
                     "group_id": f"{split}_g{i % 2 + (0 if split == 'dev' else 2)}", "duration_s": len(x) / 16000,
                     "snr_db": snr if speech else np.nan, "source": "espeak" if speech else "noise", "_x": x})
    return rows


def _write_metadata(folder: Path, name: str, rows: list[dict], extra: dict | None = None) -> None:
    for r in rows:
        write_audio(folder / r["audio_path"], r["_x"])
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "_x"} for r in rows])
    for col, values in (extra or {}).items():
        frame[col] = values
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / f"{name}_metadata.csv", index=False)


def _write_params(path: Path, **baselines_kw) -> Path:
    path.write_text(yaml.safe_dump({"baselines": baselines_kw}))
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A folder laid out like the project: split CSVs and conditions CSV with real WAV files."""
    root = tmp_path_factory.mktemp("project")
    split_dir = root / layout.SPLIT_DIR
    for split, n, seed in (("dev", 12, 1), ("test", 8, 2)):
        _write_metadata(split_dir, split, _clips(split, n, seed))
    rows = _clips("cond", 4, 3)
    _write_metadata(root / layout.CONDITIONS_DIR, "conditions", rows,
                    {"base_clip_id": ["test_000", "test_000", "test_001", "test_001"],
                     "condition": ["clean", "snr", "clean", "snr"], "level": ["clean", "-5", "clean", "-5"]})
    return root


@pytest.fixture()
def in_project(project, tmp_path, monkeypatch) -> Path:
    """A fresh copy of the project folder as the working directory."""
    work = tmp_path / "work"
    shutil.copytree(project, work)
    monkeypatch.chdir(work)
    return work


def _auroc(labels: pd.Series, scores: pd.Series) -> float:
    pos, neg = scores[labels == "SPEECH"].to_numpy(), scores[labels == "NONSPEECH"].to_numpy()
    return float(((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean())


def test_stage_writes_one_row_per_clip_in_the_predictions_schema(in_project):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        baselines.main(["--params", str(_write_params(in_project / "params.yaml"))])
        # Silero runs on one thread inside the stage; the caller's count (it changes float bits) comes back
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
    out = in_project / "predictions/baselines"
    assert sorted(p.name for p in out.iterdir()) == list(DETECTORS)
    for det in DETECTORS:
        assert sorted(p.name for p in (out / det).iterdir()) == ["dev.csv", "test.csv"]
        for split in ("dev", "test"):
            meta = schema.read_metadata(layout.split_csv(split))
            pred = schema.read_predictions(out / det / f"{split}.csv")
            assert list(pred.columns[:len(schema.PREDICTIONS_COLUMNS)]) == list(schema.PREDICTIONS_COLUMNS)
            assert list(pred[schema.CLIP_ID]) == list(meta[schema.CLIP_ID])
            assert list(pred[schema.GROUP_ID]) == list(meta[schema.GROUP_ID])
            assert list(pred[schema.LABEL]) == list(meta[schema.LABEL])
            assert list(pred[schema.GROUND_TRUTH_TOKEN]) == ["A" if lab == "SPEECH" else "B" for lab in meta[schema.LABEL]]
            s = pred[schema.P_SPEECH].to_numpy()
            assert ((s >= 0) & (s <= 1)).all()
            clipped = np.clip(s, 1e-4, 1 - 1e-4)
            np.testing.assert_allclose(pred[schema.LOGIT_A], np.log(clipped / (1 - clipped)), rtol=1e-6, atol=1e-6)
            assert (pred[schema.LOGIT_B] == 0).all()
            assert list(pred[schema.PREDICTED_TOKEN]) == ["A" if v >= 0.5 else "B" for v in s]
            assert pred[schema.LOGSUMEXP_VOCAB].isna().all()
            for col in schema.METADATA_OPTIONAL:  # carried through
                pd.testing.assert_series_equal(pred[col], meta[col], check_names=False)
            assert schema.AUDIO_PATH not in pred.columns and "audio_file" not in pred.columns
    dev = schema.read_predictions(out / "silero/dev.csv")
    assert _auroc(dev[schema.LABEL], dev[schema.P_SPEECH]) > 0.9


def test_stage_is_deterministic(in_project):
    params = _write_params(in_project / "params.yaml")
    baselines.main(["--params", str(params)])
    first = {p: p.read_bytes() for p in sorted((in_project / "predictions/baselines").rglob("*.csv"))}
    baselines.main(["--params", str(params)])
    assert {p: p.read_bytes() for p in sorted((in_project / "predictions/baselines").rglob("*.csv"))} == first


@pytest.mark.parametrize("off", DETECTORS)
def test_a_detector_switched_off_has_no_folder(in_project, off):
    baselines.main(["--params", str(_write_params(in_project / "params.yaml"))])
    baselines.main(["--params", str(_write_params(in_project / "params.yaml", **{off: False}))])
    out = in_project / "predictions/baselines"
    assert sorted(p.name for p in out.iterdir()) == [d for d in DETECTORS if d != off]  # the old folder is gone too


def test_both_detectors_off_leave_an_empty_folder(in_project, caplog):
    baselines.main(["--params", str(_write_params(in_project / "params.yaml", silero=False, webrtc=False))])
    assert list((in_project / "predictions/baselines").iterdir()) == []  # an empty out, which dvc accepts
    warned = [r for r in caplog.records if "every detector is switched off" in r.getMessage()]
    assert [r.name for r in warned] == ["speech_calibration.vad.scoring"]  # library loggers are named by module


def test_conditions_are_scored_into_their_own_folder_with_their_columns(in_project):
    baselines.main(["--params", str(_write_params(in_project / "params.yaml", score_conditions=["conditions"])),
                    "--conditions", "conditions"])
    out = in_project / "predictions/baselines_conditions"
    assert sorted(p.name for p in out.iterdir()) == list(DETECTORS)
    assert not (in_project / "predictions/baselines").exists()
    for det in DETECTORS:
        pred = schema.read_predictions(out / det / "conditions.csv")
        assert len(pred) == 4
        assert list(pred["base_clip_id"]) == ["test_000", "test_000", "test_001", "test_001"]
        assert list(pred["condition"]) == ["clean", "snr", "clean", "snr"]
        assert list(pred["level"].astype(str)) == ["clean", "-5", "clean", "-5"]


def _run_cli(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run(baselines.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err  # one line, no traceback
    return err


@pytest.mark.parametrize("baselines_kw, message", [
    ({"webrtc_mode": 5}, "baselines.webrtc_mode: must be 0, 1, 2 or 3"),
    ({"webrtc_frame_ms": 25}, "baselines.webrtc_frame_ms: must be 10, 20 or 30"),
    ({"window_ms": 0}, "baselines.window_ms: must be positive"),
    ({"silero": "yes"}, "baselines.silero: expected true or false"),
    ({"silro": False}, "baselines.silro: unknown key"),
    ({"score_conditions": True}, "baselines.score_conditions: expected a list"),
    ({"score_conditions": ["../x"]}, "baselines.score_conditions[0]"),
    ({"score_conditions": ["conditions", "conditions"]}, "baselines.score_conditions: must not repeat"),
])
def test_bad_params_give_one_line_errors(in_project, capsys, baselines_kw, message):
    params = _write_params(in_project / "params.yaml", **baselines_kw)
    assert message in _run_cli(["--params", str(params)], capsys)
    assert not (in_project / "predictions").exists()


def test_missing_inputs_give_one_line_errors(in_project, capsys):
    params = str(_write_params(in_project / "params.yaml"))
    assert "conditions/other_metadata.csv: file not found" in _run_cli(["--params", params, "--conditions", "other"], capsys)
    assert "expected a plain name" in _run_cli(["--params", params, "--conditions", "../x"], capsys)
    (in_project / layout.split_csv("test")).unlink()
    assert "test_metadata.csv: file not found" in _run_cli(["--params", params], capsys)


@pytest.mark.slow
def test_the_cli_runs_as_a_module(in_project):
    _write_params(in_project / "params.yaml", webrtc_mode=4)
    out = subprocess.run([sys.executable, "-m", "stages.baselines"], cwd=in_project, capture_output=True, text=True,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "error: params.yaml: baselines.webrtc_mode: must be 0, 1, 2 or 3"]


def test_project_params_parse():
    b = params_mod.load(ROOT / "params.yaml").baselines
    assert b.silero and b.webrtc  # both on by default


# ------------------------------------------------------------------------------------- dvc end to end
def _project_params(work: Path, score_conditions: list[str]) -> None:
    """This project's params.yaml (dvc needs every declared key in it) with ``score_conditions`` set."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["baselines"]["score_conditions"] = score_conditions
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def _dvc_project(project: Path, work: Path, score_conditions: list[str]) -> None:
    """A git + dvc repo holding the stage scripts, the library, the data, and this project's own baselines stages."""
    shutil.copytree(project, work)
    for code in ("stages", "speech_calibration"):
        shutil.copytree(ROOT / code, work / code, ignore=shutil.ignore_patterns("__pycache__"))
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    (work / "dvc.yaml").write_text(yaml.safe_dump({"stages": {k: spec[k] for k in ("baselines", "baselines_conditions")}}))
    _project_params(work, score_conditions)
    for cmd in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=work, check=True, capture_output=True, env=dvc_env())


@pytest.mark.slow
def test_dvc_runs_the_stages_and_the_conditions_switch_drops_the_stage(project, tmp_path):
    work = tmp_path / "dvc"
    _dvc_project(project, work, [])
    dvc, env = [sys.executable, "-m", "dvc"], dvc_env()
    listed = subprocess.run(dvc + ["stage", "list"], cwd=work, capture_output=True, text=True, check=True, env=env).stdout
    assert "baselines" in listed and "baselines_conditions" not in listed  # off: no stage, no conditions dependency
    out = subprocess.run(dvc + ["repro"], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (work / "predictions/baselines/silero/test.csv").is_file()
    assert not (work / "predictions/baselines_conditions").exists()

    _project_params(work, ["conditions"])
    listed = subprocess.run(dvc + ["stage", "list"], cwd=work, capture_output=True, text=True, check=True, env=env).stdout
    assert "baselines_conditions@conditions" in listed
    out = subprocess.run(dvc + ["repro"], cwd=work, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    pred = schema.read_predictions(work / "predictions/baselines_conditions/webrtc/conditions.csv")
    assert "condition" in pred.columns
    assert "Stage 'baselines' didn't change, skipping" in out.stdout  # the switch re-ran nothing of the main stage
