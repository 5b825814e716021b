"""Your own evaluation sets: validated where they enter (every format, rate and layout; bad files and long
clips named by CSV row), added with the documented `dvc exp run -S` command, scored by every system and
reported with each system's dev-fitted calibrator, tracked by content."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.data import eval_sets
from speech_calibration.data.audio import load_audio
from speech_calibration.errors import UserError
from tests.eval_set_helpers import LAYOUTS, LONG_SECONDS, make_eval_set

ROOT = Path(__file__).resolve().parents[1]
WINDOW_S = 6.0


def speech_like(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A voiced-sounding stand-in (harmonics with a syllable envelope): the validation only decodes it."""
    t = np.arange(int(seconds * 16000)) / 16000
    f0 = 120 + 20 * np.sin(2 * np.pi * 3 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16000) / k for k in range(1, 6))
    return (0.1 * voice * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)).astype(np.float32)


@pytest.fixture
def outside(tmp_path) -> tuple[Path, pd.DataFrame]:
    folder = tmp_path / "outside"
    return folder, make_eval_set(folder, [speech_like(s, i) for i, s in enumerate((1.2, 1.8, 2.5))])


def test_every_format_rate_and_layout_enters_and_the_manifest_tracks_content(outside):
    folder, meta = outside
    suffixes = {Path(p).suffix for p in meta["audio_path"]}
    assert suffixes == {".wav", ".flac", ".ogg", ".mp3"}
    infos = [sf.info(str(folder / p)) for p in meta["audio_path"]]
    assert {i.samplerate for i in infos} >= {8000, 16000, 22050, 44100, 48000} and {i.channels for i in infos} == {1, 2}
    manifest = eval_sets.validate("outside", folder, 100.0, "error")
    assert list(manifest["clip_id"]) == list(meta["clip_id"])
    for _, row in manifest.iterrows():
        assert Path(row["audio_path"]).is_absolute()
        assert row["sha256"] == hashlib.sha256(Path(row["audio_path"]).read_bytes()).hexdigest()
        assert row["duration_s"] == pytest.approx(len(load_audio(row["audio_path"])) / 16000, abs=1e-6)
    long = manifest.set_index("clip_id").loc[["long_nonspeech", "long_speech"], "duration_s"].to_numpy()
    np.testing.assert_allclose(long, LONG_SECONDS, atol=0.06)  # mp3 frames pad a little


def test_long_clips_are_reported_up_front_by_policy(outside, caplog):
    folder, meta = outside
    csv = folder / "metadata.csv"
    row = int(np.flatnonzero(meta["clip_id"] == "long_nonspeech")[0]) + 1
    with pytest.raises(UserError, match=rf"^{csv} row {row} \(long_nonspeech\): clip of 7\.0\d s is longer than the "
                                        r"model's 6 s audio window \(2 clips are\).*audio\.long_clips"):
        eval_sets.validate("outside", folder, WINDOW_S, "error")
    for policy in ("truncate", "windows"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            manifest = eval_sets.validate("outside", folder, WINDOW_S, policy)
        assert len(manifest) == len(meta)
        assert f"eval set outside: 2 of {len(meta)} clips are longer" in caplog.text and f"={policy}" in caplog.text


def test_a_nan_clip_names_its_row_and_file_before_the_window_is_read(outside):
    folder, meta = outside
    bad = folder / "audio" / "broken.wav"
    sf.write(str(bad), np.full(1600, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    pd.concat([meta, pd.DataFrame([{**meta.iloc[0].to_dict(), "clip_id": "broken", "audio_path": "audio/broken.wav"}])],
              ignore_index=True).to_csv(folder / "metadata.csv", index=False)

    def window():
        raise AssertionError("the model's window was read before every clip decoded")

    with pytest.raises(UserError, match=rf"row {len(meta) + 1} \(broken\): {bad}: audio contains NaN or infinite"):
        eval_sets.validate("outside", folder, window, "error")


def test_clips_too_short_for_an_audio_token_are_refused_before_the_window_is_read(outside):
    """A 10-ms clip and a one-sample clip gave the model no audio token, and so the same logits (the prompt alone):
    the set is refused, naming the first one's row, its duration and the shortest a clip may be; a clip of 20.0625 ms
    (321 samples, one token) enters."""
    folder, meta = outside
    extra = []
    for clip_id, n in (("blip", 160), ("one", 1), ("shortest", 321)):
        sf.write(str(folder / "audio" / f"{clip_id}.wav"), np.full(n, 0.1, np.float32), 16000)
        extra.append({**meta.iloc[0].to_dict(), "clip_id": clip_id, "audio_path": f"audio/{clip_id}.wav"})
    pd.concat([meta, pd.DataFrame(extra)], ignore_index=True).to_csv(folder / "metadata.csv", index=False)

    def window():
        raise AssertionError("the model's window was read before every clip was checked")

    with pytest.raises(UserError, match=rf"^{folder / 'metadata.csv'} row {len(meta) + 1} \(blip\): clip of 10 ms is "
                                        r"shorter than 20\.0625 ms, the shortest that gives the model an audio token "
                                        r"\(2 clips are\).*remove the row, or pad the clip"):
        eval_sets.validate("outside", folder, window, "error")
    pd.concat([meta, pd.DataFrame(extra[2:])], ignore_index=True).to_csv(folder / "metadata.csv", index=False)
    manifest = eval_sets.validate("outside", folder, 100.0, "error")
    assert manifest.set_index("clip_id").loc["shortest", "duration_s"] == round(321 / 16000, 6)


def test_a_truncated_copy_and_a_recording_listed_twice_are_refused_as_prepare_refuses_them(outside):
    """An MP3 cut to 45 % of its bytes keeps its header's 3 s and decodes to about a second: the set is refused,
    naming the row and both durations (it was scored as the shorter clip). A byte-identical copy of a clip under
    another name counted twice: refused, naming both rows."""
    import shutil

    folder, meta = outside
    whole = folder / "audio/whole.mp3"
    sf.write(str(whole), 0.3 * np.sin(2 * np.pi * 440 * np.arange(48000) / 16000).astype(np.float32), 16000)
    (folder / "audio/cut.mp3").write_bytes(whole.read_bytes()[:len(whole.read_bytes()) * 45 // 100])
    row = {**meta.iloc[0].to_dict(), "clip_id": "cut", "audio_path": "audio/cut.mp3"}
    pd.concat([meta, pd.DataFrame([row])], ignore_index=True).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match=rf"^{folder / 'metadata.csv'} row {len(meta) + 1} \(cut\): audio file .*cut\.mp3 "
                                        r"decodes to [01]\.\d{3} s but its header says 3\.000 s \(truncated"):
        eval_sets.validate("outside", folder, 100.0, "error")
    first = folder / meta.loc[0, "audio_path"]
    shutil.copy(first, first.with_name("again" + first.suffix))
    row = {**meta.iloc[1].to_dict(), "clip_id": "again", "audio_path": f"audio/again{first.suffix}"}
    pd.concat([meta, pd.DataFrame([row])], ignore_index=True).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match=rf"^{folder / 'metadata.csv'} row {len(meta) + 1} \(again\): audio file .* has "
                                        rf"the same content as .*, listed at {folder / 'metadata.csv'} row 1 "):
        eval_sets.validate("outside", folder, 100.0, "error")


def test_a_set_sharing_recordings_or_speakers_with_the_studys_splits_is_warned_about(outside, tmp_path, caplog):
    """A set clip that is byte for byte a training clip, and a set group id that is also a training group: one
    warning each (the set would measure what the model trained on, or no new speaker); a set apart from the splits,
    or a project before prepare wrote them, gets none."""
    import shutil

    folder, meta = outside
    split_dir = tmp_path / "split"
    (split_dir / "audio").mkdir(parents=True)
    rows = []
    for split, n in (("train", 4), ("dev", 2), ("test", 2)):
        for i in range(n):
            clip = f"{split}{i}"
            sf.write(str(split_dir / "audio" / f"{clip}.wav"), speech_like(1.0 + 0.05 * len(rows)), 16000)  # each its own
            rows.append((split, {"clip_id": clip, "audio_path": f"audio/{clip}.wav",
                                 "label": "SPEECH" if i % 2 == 0 else "NONSPEECH", "group_id": f"{split}_g{i}"}))
    for split in ("train", "dev", "test"):
        pd.DataFrame([r for s, r in rows if s == split]).to_csv(split_dir / f"{split}_metadata.csv", index=False)
    with caplog.at_level("WARNING", logger="speech_calibration.data.eval_sets"):
        eval_sets.warn_overlap_with_splits("outside", eval_sets.validate("outside", folder, 100.0, "error"), split_dir)
        eval_sets.warn_overlap_with_splits("outside", eval_sets.validate("outside", folder, 100.0, "error"),
                                           tmp_path / "not_prepared")
    assert not caplog.records
    shutil.copy(split_dir / "audio/train1.wav", folder / "audio/copied.wav")
    extra = {**meta.iloc[0].to_dict(), "clip_id": "copied", "audio_path": "audio/copied.wav", "group_id": "TRAIN_G3"}
    pd.concat([meta, pd.DataFrame([extra])], ignore_index=True).to_csv(folder / "metadata.csv", index=False)
    with caplog.at_level("WARNING", logger="speech_calibration.data.eval_sets"):
        eval_sets.warn_overlap_with_splits("outside", eval_sets.validate("outside", folder, 100.0, "error"), split_dir)
    assert [r.getMessage().split(":")[1] for r in caplog.records] == [
        " 1 of its recordings are byte for byte in the study's splits (train), e.g. its copied is train's train1",
        " group ids also in the study's splits (train"]
    assert "train: train_g3" in caplog.records[1].getMessage()


def test_a_clip_id_that_cannot_name_a_file_is_refused(outside):
    folder, meta = outside
    meta.assign(clip_id=["../escaped"] + list(meta["clip_id"][1:])).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match=rf"^{folder / 'metadata.csv'} row 1: clip_id '\.\./escaped' contains '/'"):
        eval_sets.validate("outside", folder, WINDOW_S, "error")


def test_what_is_not_a_set_folder_is_refused_with_the_key(outside, tmp_path):
    folder, meta = outside
    with pytest.raises(UserError, match=r"^eval_sets\.outside: .*metadata\.csv is a file; give the folder"):
        eval_sets.validate("outside", folder / "metadata.csv", WINDOW_S, "error")
    with pytest.raises(UserError, match=r"^eval_sets\.outside: .*nowhere: no such folder"):
        eval_sets.validate("outside", tmp_path / "nowhere", WINDOW_S, "error")
    elsewhere = tmp_path / "elsewhere.wav"
    sf.write(str(elsewhere), np.zeros(1600, np.float32), 16000)
    meta.assign(audio_path=[str(elsewhere)] + list(meta["audio_path"][1:])).to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match=r"row 1 \(g0_c0\): .*elsewhere\.wav lies outside the set's folder"):
        eval_sets.validate("outside", folder, WINDOW_S, "error")
    meta.iloc[:0].to_csv(folder / "metadata.csv", index=False)
    with pytest.raises(UserError, match=r"^eval_sets\.outside: .*metadata\.csv has no rows; list the set's clips"):
        eval_sets.validate("outside", folder, WINDOW_S, "error")


def test_the_manifest_is_written_whole_with_portable_paths(outside, tmp_path, monkeypatch):
    folder, _ = outside
    monkeypatch.chdir(tmp_path)  # the project root: the set lies inside it
    path = eval_sets.write_manifest("outside", eval_sets.validate("outside", folder, 100.0, "error"))
    written = pd.read_csv(path)
    assert path == layout.eval_set_csv("outside") and not Path(written["audio_path"][0]).is_absolute()
    resolved = [os.path.normpath(path.parent / p) for p in written["audio_path"]]
    assert all(Path(p).is_file() for p in resolved)


def test_set_names_and_the_old_key_are_checked():
    raw = {"eval_sets": {"mine": "data/mine", "my-set_2": "x"}}
    assert set(params_mod.parse(params_mod.Params, raw, "").eval_sets) == {"mine", "my-set_2"}
    for bad in ("test", "conditions", "2x", "a/b"):
        with pytest.raises(UserError, match=rf"^eval_sets\.{bad}: a set name is letters"):
            params_mod.parse(params_mod.Params, {"eval_sets": {bad: "x"}}, "")
    with pytest.raises(UserError, match=r"^predict\.extra_csvs: no longer a key; list your sets under eval_sets"):
        params_mod.parse(params_mod.Params, {"predict": {"extra_csvs": {}}}, "")
    with pytest.raises(UserError, match=r"^audio\.long_clips: 'cut' is not one of error, truncate, windows"):
        params_mod.parse(params_mod.Params, {"audio": {"long_clips": "cut"}}, "")


def test_the_documented_set_param_form(tmp_path):
    """`-S '+eval_sets.mine=...'` adds a key params.yaml lacks; the bare form is refused by DVC's parser (README)."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    with pytest.raises(InvalidArgumentError):
        apply_overrides(str(params), ["eval_sets.mine=data/mine"])
    apply_overrides(str(params), ["+eval_sets.mine=data/mine"])
    assert params_mod.load(params).eval_sets == {"mine": "data/mine"}
    apply_overrides(str(params), ["eval_sets.mine=data/other"])  # an existing set: no + needed
    assert params_mod.load(params).eval_sets == {"mine": "data/other"}


def test_layouts_cover_every_promised_format():
    from speech_calibration.data.audio import FORMATS

    assert {s.lstrip(".").upper() for s, _, _ in LAYOUTS} == set(FORMATS)


# ------------------------------------------------------------------------------------ the real DVC workflow
@pytest.mark.slow
def test_an_outside_set_added_with_the_documented_command(study, tmp_path):
    """The README's command adds the set: only the stages that validate, score and report sets run; every system
    gets a block; the long clips are scored as windows (the study's policy); the other two policies behave as
    documented at the set's stage; editing one audio file is seen by DVC."""
    import subprocess
    import sys

    import yaml

    from speech_calibration.data.schema import read_metadata
    from tests.dvc_helpers import copy_repo, dvc, dvc_env, metrics_json, stages_run
    from tests.eval_set_helpers import write_clip

    repo = copy_repo(study, tmp_path / "repo")
    test_split = read_metadata(repo / layout.split_csv("test"))
    speech = [load_audio(f) for f in test_split.loc[test_split["label"] == "SPEECH", "audio_file"][:4]]
    meta = make_eval_set(repo / "data/outside", speech)

    out = dvc("exp", "run", "-S", "+eval_sets.outside=data/outside", cwd=repo).stdout
    assert stages_run(out) == {"eval_set@outside", "predict_eval_set@42-outside", "predict_eval_set@123-outside",
                               "predict_eval_set_zeroshot@outside", "baselines_eval_set@outside",
                               "evaluate_eval_set@outside", "aggregate"}
    block = json.loads((repo / "metrics/summary.json").read_text())["eval_sets"]["outside"]
    assert block == json.loads((repo / "metrics/eval_sets/outside.json").read_text())
    assert set(block["systems"]) == {"seed_42", "seed_123", "ensemble", "zeroshot", "baselines/silero", "baselines/webrtc"}
    assert (block["n"], block["n_groups"]) == (len(meta), 6)
    # the ensemble is the seeds' mean log-odds, clip by clip, as on test
    scores = [pd.read_csv(repo / f"predictions/eval_sets/outside/seed_{s}/outside.csv").set_index("clip_id").loc[meta["clip_id"]]
              for s in (42, 123)]
    from sklearn.metrics import brier_score_loss, log_loss

    from speech_calibration.calibration import calibrators

    a, b = (np.mean([f[col].to_numpy() for f in scores], axis=0) for col in ("logit_A", "logit_B"))
    truth = (meta["label"] == "SPEECH").to_numpy()
    ensemble = block["systems"]["ensemble"]
    p_uncal = 1.0 / (1.0 + np.exp(b - a))
    assert ensemble["uncalibrated"]["accuracy"] == pytest.approx(np.mean((a > b) == truth))
    assert ensemble["uncalibrated"]["nll"] == pytest.approx(log_loss(truth, p_uncal), abs=1e-6)
    cal = calibrators.load(repo / layout.SystemFiles("ensemble", reference=True).calibrator)  # its dev fit, unchanged
    assert ensemble["calibrated"]["brier"] == pytest.approx(brier_score_loss(truth, cal.predict_proba(a, b)), abs=1e-6)
    assert ensemble["uncalibrated"]["nll"] != block["systems"]["seed_42"]["uncalibrated"]["nll"]
    for system, entry in block["systems"].items():
        assert entry["method_fitted"] == "temperature", system  # the dev-fitted calibrator, as on test
        assert 0.0 <= entry["calibrated"]["accuracy"] <= 1.0 and entry["calibrated"]["ece"] >= 0.0
        # 6 groups: a group-level interval, unless the set's clips give one value in every resample (a detector
        # right on every clip with full confidence: ECE 0), which says so rather than claim [0, 0]
        ece = entry["calibrated"]["ci_group"]["ece"]
        assert ece["lo"] is not None or ece["reason"].startswith("the same value ("), (system, ece)
    assert all(block["systems"][s]["calibrated"]["ci_group"]["ece"]["lo"] is not None for s in ("seed_42", "seed_123"))
    assert "Evaluation set 'outside': 26 clips" in (repo / "metrics/summary.txt").read_text()
    # its headline files beside test's, so `dvc metrics show` and `dvc exp show` carry the set's numbers too
    shown = metrics_json(repo)
    prefix = "metrics/headline/eval_sets/outside/"
    on_set = {path.removeprefix(prefix) for path in shown if path.startswith(prefix)}
    assert on_set == {f"{system}/{series}.json" for system in ("fine_tuned", "seed_42", "seed_123", "ensemble",
                                                               "zeroshot", "silero", "webrtc")
                      for series in ("uncalibrated", "calibrated")}
    tuned = shown[f"{prefix}fine_tuned/calibrated.json"]["data"]
    assert tuned["ece"] == round(block["fine_tuned"]["calibrated"]["ece"]["mean"], 4)
    silero = shown[f"{prefix}silero/uncalibrated.json"]["data"]
    assert silero["auc"] == round(block["systems"]["baselines/silero"]["uncalibrated"]["roc_auc"], 4)
    test_tuned = json.loads((repo / "metrics/summary.json").read_text())["fine_tuned"]["calibrated"]["ece"]["mean"]
    assert shown["metrics/headline/fine_tuned/calibrated.json"]["data"]["ece"] == round(test_tuned, 4)  # test's own
    windows = pd.read_csv(repo / "predictions/eval_sets/outside/seed_42/outside.csv").set_index("clip_id")
    assert windows.loc[["long_nonspeech", "long_speech"], "n_windows"].tolist() == [2, 2]
    assert (windows.drop(index=["long_nonspeech", "long_speech"])["n_windows"] == 1).all()

    # the other policies, through the stage scripts with a params file beside
    def run_stage(policy: str, *args: str) -> subprocess.CompletedProcess:
        raw = yaml.safe_load((repo / "params.yaml").read_text())
        raw["audio"]["long_clips"] = policy
        (repo / f"params_{policy}.yaml").write_text(yaml.safe_dump(raw))
        return subprocess.run([sys.executable, "-m", *args, "--params", f"params_{policy}.yaml"], cwd=repo,
                              env=dvc_env(), capture_output=True, text=True)

    refused = run_stage("error", "stages.eval_set", "--name", "outside")
    row = int(np.flatnonzero(meta["clip_id"] == "long_nonspeech")[0]) + 1
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"error: data/outside/metadata.csv row {row} (long_nonspeech): clip of 7.0")
    cut = run_stage("truncate", "stages.eval_set", "--name", "outside")  # scoring each policy: test_train_predict.py
    assert cut.returncode == 0 and "eval set outside: 2 of 26 clips are longer" in cut.stderr, cut.stderr
    assert "audio.long_clips=truncate: the model hears the first 6 s of each" in cut.stderr

    # editing one of the set's audio files is a changed dependency of its eval_set stage, and of nothing else
    dvc("checkout", "data/eval_sets/outside", "--force", cwd=repo)
    write_clip(repo / "data/outside/audio/g0_c1.flac", np.zeros(16000, np.float32), 44100, 1)
    status = json.loads(dvc("status", "--json", cwd=repo).stdout)
    assert set(status) == {"eval_set@outside"}, status
