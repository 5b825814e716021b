"""The ``prepare`` stage end to end, for all three sources: real eSpeak NG, real audio files, the real CLI."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml
from conftest import ROOT, SMALL_SYNTHETIC

from speech_calibration import cli, layout
from speech_calibration import params as params_mod
from speech_calibration.data import schema, splits
from speech_calibration.errors import UserError
from speech_calibration.parallel import WORKERS_ENV
from stages import prepare as stage


@contextlib.contextmanager
def inside(folder: Path):
    """Run with ``folder`` (created if needed) as the working directory: the stage writes relative to it."""
    folder.mkdir(parents=True, exist_ok=True)
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(old)


def prepare_in(folder: Path, params: Path) -> tuple[Path, Path]:
    """Run the stage with ``folder`` as the project root; return (its split folder, its metrics file)."""
    with inside(folder):
        stage.main(["--params", str(params)])
    return folder / layout.SPLIT_DIR, folder / layout.DATA_METRICS


def run_cli(capsys, folder: Path, params: Path) -> tuple[int, str]:
    """Run the stage's command line in this process with ``folder`` as the project root; (exit status, stderr)."""
    with inside(folder):
        try:
            cli.run(stage.main, ["--params", str(params)])
            code = 0
        except SystemExit as exit_:
            code = exit_.code
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str, *words: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def digest(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(out: Path) -> list[str]:
    """Temporary folders that atomic_dir would leave beside ``out`` after a crash."""
    if not out.parent.is_dir():
        return []
    return [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


# ============================================================================================ synthetic
@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, tiny_model):
    """The small synthetic corpus prepared once through the CLI."""
    root = tmp_path_factory.mktemp("synthetic")
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump({"data": {"synthetic": SMALL_SYNTHETIC}, "model": {"name_or_path": str(tiny_model)}}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(WORKERS_ENV, "2")  # the clips rendered on two forked workers
        out, metrics = prepare_in(root / "a", params)
    return params, out, metrics


def test_synthetic_is_byte_identical_across_runs_into_different_folders_on_one_process_or_two(synthetic_run, tmp_path,
                                                                                             monkeypatch):
    params, out, metrics = synthetic_run
    monkeypatch.setenv(WORKERS_ENV, "1")  # the fixture's run rendered on two workers; this one in this process
    out2, metrics2 = prepare_in(tmp_path / "b", params)
    first, second = digest(out), digest(out2)
    assert len(first) == 20 + 3 and first == second  # 20 clips and 3 CSVs, every byte the same
    assert metrics.read_bytes() == metrics2.read_bytes()


def test_synthetic_output_follows_the_contract(synthetic_run):
    _, out, metrics = synthetic_run
    frames = schema.read_splits(out)  # validates columns, labels, audio, both classes, disjoint groups
    sizes = {"train": (8, 2), "dev": (6, 2), "test": (6, 2)}
    for split, df in frames.items():
        assert (len(df), df[schema.GROUP_ID].nunique()) == sizes[split]
        assert list(df.columns[:7]) == list(schema.METADATA_REQUIRED + schema.METADATA_OPTIONAL)
        assert (df.groupby(schema.GROUP_ID)[schema.LABEL].nunique() == 2).all()  # both classes in every group
        for clip_id, path in zip(df[schema.CLIP_ID], df[schema.AUDIO_PATH]):
            assert path == f"audio/{split}/{clip_id}.wav"
        speech = df[schema.LABEL] == schema.SPEECH
        assert df.loc[speech, schema.SNR_DB].notna().all() and df.loc[~speech, schema.SNR_DB].isna().all()
        assert df[schema.SOURCE].str.startswith("synthetic:").all()
        info = sf.info(df["audio_file"].iloc[0])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert df[schema.DURATION_S].iloc[0] == pytest.approx(info.frames / 16000)
    data = json.loads(metrics.read_text())
    assert data["train"]["clips"] == 8 and data["train"]["groups"] == 2
    assert data["total"]["clips"] == 20 and data["total"]["speech"] + data["total"]["nonspeech"] == 20
    assert 0 < data["dev"]["speech_fraction"] < 1


def test_failed_run_leaves_the_previous_output_untouched(synthetic_run, make_params, small_synthetic, tmp_path, capsys):
    _, out, metrics = synthetic_run
    before, metrics_before = digest(out), metrics.read_bytes()
    small_synthetic["voices"]["dev"] = ["xx-nowhere"]
    params = make_params({"data": {"synthetic": small_synthetic}})
    code, err = run_cli(capsys, out.parents[2], params)  # the same project folder as the good run
    one_line_error(code, err, f"{params}: data.synthetic.voices.dev[0]: eSpeak NG has no language voice 'xx-nowhere'")
    assert digest(out) == before and leftovers(out) == []
    assert metrics.read_bytes() == metrics_before


@pytest.mark.parametrize("data, words", [
    ({"sourse": "csv"}, ["data.sourse: unknown key"]),
    ({"source": "mp3"}, ["data.source: 'mp3' is not one of synthetic, csv, presplit"]),
    ({"source": "csv"}, ["data.csv.path: must name a metadata CSV"]),
    ({"source": "presplit", "presplit": {"train": "a.csv"}}, ["data.presplit.dev: must name a metadata CSV"]),
    ({"synthetic": {"max_duration_s": 0.1}}, ["data.synthetic.min_duration_s: must be positive and not above"]),
    ({"synthetic": {"backgrounds": {"train": ["white"], "dev": ["rain"], "test": ["white"]}}},
     ["data.synthetic.backgrounds.test[0]: 'white' is also in backgrounds.train"]),
    ({"synthetic": {"backgrounds": {"train": ["white"], "dev": ["lava"], "test": ["room"]}}},
     ["data.synthetic.backgrounds.dev[0]: unknown background 'lava'"]),
    ({"csv": {"dev_groups": 1.5}}, ["data.csv.dev_groups: 1.5 must be a fraction"]),
])
def test_bad_params_end_with_one_line_and_exit_2(make_params, tmp_path, capsys, data, words):
    params = make_params({"data": data})
    project = tmp_path / "project"
    code, err = run_cli(capsys, project, params)
    one_line_error(code, err, str(params), *words)
    out = project / layout.SPLIT_DIR
    assert not out.exists() and leftovers(out) == [] and not (project / layout.DATA_METRICS).exists()


def test_cli_help_names_the_sources_and_what_it_writes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        stage.main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    for word in ("synthetic", "csv", "presplit", "--params", str(layout.SPLIT_DIR), str(layout.DATA_METRICS)):
        assert word in shown


@pytest.mark.slow
def test_cli_help_and_exit_status_as_a_real_process(make_params):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    shown = subprocess.run([sys.executable, "-m", "stages.prepare", "--help"], capture_output=True, text=True,
                           cwd=ROOT, env=env)
    assert shown.returncode == 0
    for word in ("synthetic", "csv", "presplit", "--params", "data/processed/grouped_split", "metrics/data.json"):
        assert word in shown.stdout
    params = make_params({"data": {"split_seed": "zero"}})
    bad = subprocess.run([sys.executable, "-m", "stages.prepare", "--params", str(params)], capture_output=True,
                         text=True, cwd=ROOT, env=env)
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [f"error: {params}: data.split_seed: expected an integer, got 'zero'"]


# ================================================================================================= csv
@pytest.fixture
def user_corpus(tmp_path, make_audio):
    """A user's corpus in its own folder: 10 groups (4 mixed, 3 speech-only, 3 nonspeech-only), 3 clips
    each, audio in several formats (each clip its own tone: prepare refuses a recording listed twice), one absolute
    path; returns the metadata CSV's path."""
    rows = []
    kinds = ["mixed"] * 4 + ["speech"] * 3 + ["nonspeech"] * 3
    formats = [".wav", ".flac", ".ogg"]
    for g, kind in enumerate(kinds):
        for c in range(3):
            label = {"mixed": ["SPEECH", "NONSPEECH", "SPEECH"][c], "speech": "SPEECH", "nonspeech": "NONSPEECH"}[kind]
            name = f"g{g}_c{c}{formats[(g + c) % 3]}"
            path = make_audio(f"corpus/audio/{name}", rate=[8000, 22050, 48000][c], channels=1 + c % 2,
                              seconds=0.3 + 0.1 * c, freq=300.0 + 10 * (3 * g + c))
            rows.append({"clip_id": f"g{g}_c{c}", "audio_path": str(path) if (g, c) == (0, 0) else f"audio/{name}",
                         "label": label, "group_id": f"spk{g}", "note": f"extra {g}"})
    csv = tmp_path / "corpus" / "all.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def run_csv(make_params, user_corpus, tmp_path, name="out", **csv_params):
    """The library's prepare into ``<tmp>/<name>/grouped_split`` (a folder of the test's choosing)."""
    out = tmp_path / name / "grouped_split"
    params = make_params({"data": {"source": "csv", "split_seed": csv_params.pop("split_seed", 0),
                                   "csv": {"path": str(user_corpus), **csv_params}}}, f"{name}.yaml")
    splits.prepare(params_mod.load(params).data, out)
    return out


def test_csv_is_split_by_group_with_both_classes_everywhere(make_params, user_corpus, tmp_path):
    out = run_csv(make_params, user_corpus, tmp_path, dev_groups=0.2, test_groups=2)
    frames = schema.read_splits(out)  # every audio path resolves from the new folder; groups disjoint
    assert {s: df[schema.GROUP_ID].nunique() for s, df in frames.items()} == {"train": 6, "dev": 2, "test": 2}
    for df in frames.values():
        assert set(df[schema.LABEL]) == {schema.SPEECH, schema.NONSPEECH}
        assert df[schema.DURATION_S].notna().all() and "note" in df.columns
    every = pd.concat(frames.values())
    source = pd.read_csv(user_corpus)
    assert sorted(every[schema.CLIP_ID]) == sorted(source["clip_id"])
    paths = dict(zip(every[schema.CLIP_ID], every[schema.AUDIO_PATH]))
    assert paths["g0_c0"] == source["audio_path"][0]  # absolute stays absolute
    assert paths["g1_c1"] == "../../corpus/audio/g1_c1.ogg"  # relative is rebased onto the new folder
    metrics = splits.data_metrics(frames)
    assert metrics["total"]["clips"] == 30 and metrics["test"]["groups"] == 2


def test_csv_split_is_reproducible_from_split_seed(make_params, user_corpus, tmp_path):
    a = run_csv(make_params, user_corpus, tmp_path, "a", split_seed=3)
    b = run_csv(make_params, user_corpus, tmp_path, "b", split_seed=3)
    c = run_csv(make_params, user_corpus, tmp_path, "c", split_seed=4)
    test_csv = "test_metadata.csv"
    assert (a / test_csv).read_bytes() == (b / test_csv).read_bytes()
    assert (a / test_csv).read_bytes() != (c / test_csv).read_bytes()


def test_csv_with_a_nan_wav_is_rejected_at_prepare_naming_its_row(user_corpus, make_params, tmp_path, capsys):
    """A WAV whose header is fine but whose samples are NaN stops prepare (not train, later), naming the CSV row."""
    import soundfile as sf

    source = pd.read_csv(user_corpus)
    bad = user_corpus.parent / "audio" / "nan.wav"
    sf.write(str(bad), np.full(4000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    source.loc[4, "audio_path"] = "audio/nan.wav"
    source.to_csv(user_corpus, index=False)
    params = make_params({"data": {"source": "csv", "csv": {"path": str(user_corpus)}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, f"{user_corpus} row 5 ({source.loc[4, 'clip_id']})", str(bad), "NaN or infinite samples")
    processed = tmp_path / "project" / "data" / "processed"
    assert not processed.exists() or list(processed.iterdir()) == []  # nothing half-written


def test_decoding_in_chunks_still_names_the_row_of_a_bad_clip(user_corpus):
    """``check_decodable`` holds a few clips at a time: a bad clip in a later chunk is named by its own row."""
    source = pd.read_csv(user_corpus)
    bad = user_corpus.parent / "audio" / "nan.wav"
    sf.write(str(bad), np.full(4000, np.nan, dtype=np.float32), 16000, subtype="FLOAT")
    source.loc[6, "audio_path"] = "audio/nan.wav"
    source.to_csv(user_corpus, index=False)
    meta = schema.read_metadata(user_corpus, require_both_classes=False)
    splits.check_decodable(meta.iloc[:6], user_corpus, chunk=4)  # the rows before it decode
    with pytest.raises(UserError, match=rf"^{user_corpus} row 7 \({source.loc[6, 'clip_id']}\): .*NaN or infinite"):
        splits.check_decodable(meta, user_corpus, chunk=4)


def test_a_clip_longer_than_the_model_window_is_decided_at_prepare(user_corpus, make_params, make_audio, tmp_path,
                                                                   capsys, caplog):
    """7 s against the tiny model's 6-s window: error stops prepare naming the CSV row, before anything is written;
    truncate and windows let it through and say so in the log."""
    source = pd.read_csv(user_corpus)
    make_audio("corpus/audio/long.flac", seconds=7.0)
    source.loc[7, "audio_path"] = "audio/long.flac"
    source.to_csv(user_corpus, index=False)
    data = {"source": "csv", "csv": {"path": str(user_corpus)}}
    code, err = run_cli(capsys, tmp_path / "project", make_params({"data": data}))
    one_line_error(code, err, f"{user_corpus} row 8 ({source.loc[7, 'clip_id']}): clip of 7.00 s is longer than the "
                              "model's 6 s audio window", "audio.long_clips")
    assert not (tmp_path / "project" / layout.SPLIT_DIR).exists()
    for policy in ("truncate", "windows"):
        params = make_params({"data": data, "audio": {"long_clips": policy}}, f"{policy}.yaml")
        caplog.clear()
        code, _ = run_cli(capsys, tmp_path / policy, params)
        assert code == 0 and f"1 of {len(source)} clips are longer" in caplog.text
        assert f"audio.long_clips={policy}" in caplog.text


def refused_by_prepare(csv: Path, out: Path) -> str:
    """The one-line error ``prepare`` of the corpus ``csv`` (data.source csv) stops with; nothing is left at ``out``."""
    data = params_mod.Data(source="csv", csv=params_mod.CsvData(path=str(csv)))
    with pytest.raises(UserError) as err:
        splits.prepare(data, out)
    assert "\n" not in str(err.value) and not out.exists() and leftovers(out) == []
    return str(err.value)


def test_a_clip_id_that_would_write_outside_its_folder_is_refused_at_prepare(user_corpus, tmp_path):
    """The conditions stage names files after clip ids: '../../../escaped' would have written outside its folder."""
    source = pd.read_csv(user_corpus)
    source.loc[2, "clip_id"] = "../../../escaped"
    source.to_csv(user_corpus, index=False)
    message = refused_by_prepare(user_corpus, tmp_path / "out")
    assert message.startswith(f"{user_corpus} row 3: clip_id '../../../escaped' contains '/'")
    assert "replace them with _" in message


def short_wav(path: Path, n: int, rate: int = 16000) -> Path:
    """A real WAV of ``n`` frames of a 440 Hz tone at ``rate``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32), rate)
    return path


def test_a_clip_too_short_for_an_audio_token_is_refused_at_prepare(user_corpus, tmp_path):
    """10 ms and one sample give the model no audio token (it would answer from the prompt alone): prepare stops,
    naming the first one's row, its duration and the shortest a clip may be, before anything is written."""
    source = pd.read_csv(user_corpus)
    short_wav(user_corpus.parent / "audio" / "blip.wav", 160)
    short_wav(user_corpus.parent / "audio" / "one.wav", 1)
    source.loc[4, "audio_path"], source.loc[6, "audio_path"] = "audio/blip.wav", "audio/one.wav"
    source.to_csv(user_corpus, index=False)
    message = refused_by_prepare(user_corpus, tmp_path / "out")
    assert message == (f"{user_corpus} row 5 ({source.loc[4, 'clip_id']}): clip of 10 ms is shorter than 20.0625 ms, "
                       "the shortest that gives the model an audio token (2 clips are), so the model would answer from "
                       "the prompt alone; remove the row, or pad the clip (with silence or noise) to at least 20.0625 ms")


def mp3_cut_short(make_audio, name: str, keep: int, seconds: float = 3.0) -> tuple[Path, float]:
    """A real 16-kHz MP3 of ``seconds`` with all but ``keep`` of its bytes cut off (negative: cut that many), as a copy
    that stopped early leaves it; (its path, the seconds it decodes to, measured by soundfile)."""
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile writes no MP3")
    path = make_audio(name, seconds=seconds, freq=523.0)
    path.write_bytes(path.read_bytes()[:keep])
    info = sf.info(str(path))
    assert info.frames / info.samplerate == seconds  # its Xing header still says the full length
    return path, len(sf.read(str(path))[0]) / info.samplerate


def test_a_truncated_mp3_is_refused_with_both_durations(user_corpus, make_audio, tmp_path):
    """An MP3 cut to 45 % of its bytes keeps its header's 3 s and decodes to about 1 s: prepare decodes every clip
    and refuses it, naming the row, the file, both durations and the fix, before anything is written."""
    size = len(make_audio("probe.mp3", seconds=3.0, freq=523.0).read_bytes())
    cut, decoded = mp3_cut_short(make_audio, "corpus/audio/cut.mp3", size * 45 // 100)
    assert decoded < 2.0
    source = pd.read_csv(user_corpus)
    source.loc[4, "audio_path"] = "audio/cut.mp3"
    source.to_csv(user_corpus, index=False)
    message = refused_by_prepare(user_corpus, tmp_path / "out")
    assert message.startswith(f"{user_corpus} row 5 (g1_c1): audio file {cut} decodes to {decoded:.3f} s but its header "
                              "says 3.000 s (truncated")
    assert "re-copy it" in message and "re-encode it" in message


def test_decoded_lengths_replace_the_headers_in_the_split_and_the_metrics(make_params, presplit_corpus, make_audio,
                                                                          tmp_path):
    """An MP3 short of 10 bytes decodes a few ms short of its header's 3 s, within DURATION_TOLERANCE_S: it passes,
    and the split CSV and metrics/data.json carry the decoded length, not the header's."""
    cut, decoded = mp3_cut_short(make_audio, "mine/audio/short.mp3", -10)
    assert 3.0 - splits.DURATION_TOLERANCE_S < decoded < 3.0
    test_csv = presplit_corpus["test"]
    test_csv.write_text(test_csv.read_text().replace("audio/test0.flac", "audio/short.mp3"))
    out, metrics = prepare_in(tmp_path / "project", presplit_params(make_params, presplit_corpus))
    written = pd.read_csv(out / "test_metadata.csv")
    assert written[schema.DURATION_S].tolist() == pytest.approx([decoded, 0.5], abs=1e-9)
    assert json.loads(metrics.read_text())["test"]["duration_s_max"] == pytest.approx(decoded, abs=1e-9)


@pytest.mark.parametrize("rate, frames", [(16000, 320), (16000, 321), (44100, 883), (44100, 884), (8000, 160),
                                          (8000, 161)])
def test_the_shortest_clip_is_counted_in_the_samples_the_model_gets(tmp_path, rate, frames):
    """A clip passes prepare exactly when it decodes to at least 321 samples at 16 kHz, whatever its file's rate
    (884 frames at 44.1 kHz are 20.04 ms but 321 samples once resampled)."""
    from speech_calibration.data.audio import load_audio
    from speech_calibration.data.short_clips import MIN_SAMPLES

    short_wav(tmp_path / "audio" / "a.wav", frames, rate)
    csv = tmp_path / "meta.csv"
    csv.write_text("clip_id,audio_path,label,group_id\nc1,audio/a.wav,SPEECH,g1\n")
    meta = schema.read_metadata(csv, require_both_classes=False)
    heard = len(load_audio(tmp_path / "audio" / "a.wav")) >= MIN_SAMPLES
    assert heard == (frames in (321, 884, 161))
    if heard:
        assert splits.with_durations(meta, csv)[schema.DURATION_S].tolist() == [frames / rate]
    else:
        with pytest.raises(UserError, match=rf"^{csv} row 1 \(c1\): clip of [\d.]+ ms is shorter than 20\.0625 ms"):
            splits.with_durations(meta, csv)


def test_the_shortest_clip_agrees_with_the_models_audio_tokens():
    """``short_clips.min_samples`` against the model's own arithmetic: for every length of 1 to 2000 samples, the
    frames the Whisper feature extractor marks real (hop 160 at 16 kHz, as every Qwen2-Audio checkpoint's and the
    tiny model's) give ``num_audio_tokens`` >= 1 exactly from min_samples() on."""
    from transformers import WhisperFeatureExtractor

    from speech_calibration.data.short_clips import MEL_HOP, MIN_SAMPLES, min_samples
    from speech_calibration.model.inputs import num_audio_tokens

    extractor = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=MEL_HOP, chunk_length=1)
    lengths = np.arange(1, 2001)
    out = extractor([np.full(n, 0.1, np.float32) for n in lengths], sampling_rate=16000, padding="max_length",
                    max_length=2080, return_attention_mask=True, return_tensors="np")
    tokens = np.array([num_audio_tokens(int(f)) for f in out["attention_mask"].sum(-1)])
    np.testing.assert_array_equal(tokens >= 1, lengths >= min_samples(MEL_HOP))
    assert MIN_SAMPLES == min_samples() == 321 and num_audio_tokens(2) == 0  # a clip of exactly 20 ms: 2 frames


def test_every_condition_variant_of_the_shortest_clip_gives_an_audio_token():
    """The conditions stage's 20-ms duration level sits in a container of noise, so the model hears it: every variant
    of the shortest clip prepare accepts (and of a 1.2-s clip) is at least MIN_SAMPLES long."""
    from speech_calibration.data.short_clips import MIN_SAMPLES
    from speech_calibration.data.variants import render_clip

    cfg = params_mod.Conditions()
    assert min(cfg.durations_ms) == 20
    for n in (MIN_SAMPLES, 19200):
        x = 0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000)
        variants = render_clip(x, "c1", cfg, 16000)
        assert ("duration", "20", ) == variants[1][:2]
        assert min(len(y) for _, _, y in variants) >= MIN_SAMPLES


def test_csv_with_no_valid_split_is_rejected(tmp_path, make_audio, make_params, capsys):
    rows = [f"c{g},{make_audio(f'a{g}.wav', freq=300.0 + 10 * g)},{label},spk{g}" for g, label in
            enumerate(["SPEECH", "SPEECH", "NONSPEECH", "NONSPEECH"])]
    csv = tmp_path / "all.csv"
    csv.write_text("clip_id,audio_path,label,group_id\n" + "\n".join(rows) + "\n")
    params = make_params({"data": {"source": "csv", "csv": {"path": str(csv), "dev_groups": 1, "test_groups": 1}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, str(csv), "no split of the corpus's 4 groups", "both SPEECH and NONSPEECH")


def test_csv_asking_for_too_many_groups_is_rejected(make_params, user_corpus, tmp_path, capsys):
    params = make_params({"data": {"source": "csv", "csv": {"path": str(user_corpus), "dev_groups": 5,
                                                            "test_groups": 5}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, f"{params}: data.csv.dev_groups/test_groups", "5 + 5 of the corpus's 10 groups")


def test_csv_with_a_bad_row_names_file_and_row(make_params, user_corpus, tmp_path, capsys):
    text = user_corpus.read_text().splitlines()
    text[5] = text[5].replace("SPEECH", "speech?").replace("NONspeech?", "speech?")
    user_corpus.write_text("\n".join(text) + "\n")
    params = make_params({"data": {"source": "csv", "csv": {"path": str(user_corpus)}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, f"{user_corpus} row 5: label 'speech?'")


@pytest.mark.parametrize("source, key", [("csv", "data.csv.path"), ("presplit", "data.presplit.test")])
@pytest.mark.parametrize("what", ["missing", "folder"])
def test_an_input_csv_that_is_not_a_file_names_its_params_key(make_params, presplit_corpus, tmp_path, capsys, source,
                                                             key, what):
    """data.csv.path or data.presplit.test naming no file, or a folder: the error names the params file and key."""
    wrong = tmp_path / "mine" / ("nope.csv" if what == "missing" else "audio")
    chosen = {"csv": {"path": str(wrong)}} if source == "csv" else {
        "presplit": {**{s: str(p) for s, p in presplit_corpus.items()}, "test": str(wrong)}}
    params = make_params({"data": {"source": source, **chosen}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    said = "no such file" if what == "missing" else "is a folder; give the metadata CSV"
    one_line_error(code, err, f"error: {params}: {key}: {wrong}", said)


def test_csv_inside_the_output_folder_is_refused(make_params, tmp_path, capsys):
    out = tmp_path / layout.SPLIT_DIR
    out.mkdir(parents=True)
    (out / "mine.csv").write_text("clip_id,audio_path,label,group_id\n")
    params = make_params({"data": {"source": "csv", "csv": {"path": str(out / "mine.csv")}}})
    code, err = run_cli(capsys, tmp_path, params)
    one_line_error(code, err, "data.csv.path", "inside the output folder")


def test_group_split_helpers():
    assert splits.group_counts(10, 0.2, 0.2) == (2, 2)
    assert splits.group_counts(10, 1, 3) == (1, 3)
    assert splits.group_counts(3, 0.1, 0.1) == (1, 1)  # a fraction still gives at least one group
    with pytest.raises(UserError, match="leave at least one group for train"):
        splits.group_counts(4, 2, 2)
    df = pd.DataFrame({schema.GROUP_ID: [f"g{i // 2}" for i in range(20)],
                       schema.LABEL: [schema.SPEECH, schema.NONSPEECH] * 10})
    frames = splits.split_groups(df, 2, 3, seed=0)
    groups = {s: set(f[schema.GROUP_ID]) for s, f in frames.items()}
    assert [len(groups[s]) for s in ("train", "dev", "test")] == [5, 2, 3]
    assert not (groups["train"] & groups["dev"] or groups["train"] & groups["test"] or groups["dev"] & groups["test"])
    assert sum(len(f) for f in frames.values()) == 20


def test_data_metrics_counts():
    frames = {s: pd.DataFrame({schema.GROUP_ID: ["a", "a", "b"], schema.LABEL: ["SPEECH", "NONSPEECH", "SPEECH"],
                               schema.DURATION_S: [1.0, 2.0, 3.0]}) for s in ("train", "dev", "test")}
    m = splits.data_metrics(frames)
    assert m["train"] == {"clips": 3, "groups": 2, "speech": 2, "nonspeech": 1, "speech_fraction": 2 / 3,
                          "duration_s_total": 6.0, "duration_s_mean": 2.0, "duration_s_min": 1.0, "duration_s_max": 3.0}
    assert m["total"]["clips"] == 9 and m["total"]["groups"] == 2


# ============================================================================================ presplit
@pytest.fixture
def presplit_corpus(tmp_path, make_audio):
    """Three split CSVs in their own folder, audio beside them (each clip its own tone); returns {split: path}."""
    paths = {}
    for i, split in enumerate(("train", "dev", "test")):
        lines = ["clip_id,audio_path,label,group_id"]
        for c, label in enumerate(["SPEECH", "NONSPEECH"]):
            make_audio(f"mine/audio/{split}{c}.flac", rate=44100, channels=2, freq=300.0 + 10 * (2 * i + c))
            lines.append(f"{split}{c},audio/{split}{c}.flac,{label},grp{i}")
        paths[split] = tmp_path / "mine" / f"{split}.csv"
        paths[split].write_text("\n".join(lines) + "\n")
    return paths


def test_presplit_is_validated_and_copied_with_rebased_paths(make_params, presplit_corpus, tmp_path):
    params = make_params({"data": {"source": "presplit", "presplit": {s: str(p) for s, p in presplit_corpus.items()}}})
    out, metrics = prepare_in(tmp_path, params)  # tmp_path/data/processed/grouped_split, tmp_path/metrics/data.json
    frames = schema.read_splits(out)
    assert list(frames["dev"][schema.AUDIO_PATH]) == ["../../../mine/audio/dev0.flac", "../../../mine/audio/dev1.flac"]
    assert frames["test"][schema.DURATION_S].tolist() == pytest.approx([0.5, 0.5])
    assert json.loads(metrics.read_text())["test"]["clips"] == 2


def test_presplit_group_in_two_splits_is_rejected(make_params, presplit_corpus, tmp_path, capsys):
    test_csv = presplit_corpus["test"]
    test_csv.write_text(test_csv.read_text().replace("grp2", "grp0"))
    params = make_params({"data": {"source": "presplit", "presplit": {s: str(p) for s, p in presplit_corpus.items()}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, f"{test_csv} row 1: group 'grp0' is also in train", "move all its clips to one split")


def presplit_params(make_params, presplit_corpus, name="params.yaml") -> Path:
    return make_params({"data": {"source": "presplit", "presplit": {s: str(p) for s, p in presplit_corpus.items()}}}, name)


def test_a_stale_duration_in_the_csv_cannot_hide_a_long_clip(make_params, presplit_corpus, make_audio, tmp_path, capsys,
                                                             caplog):
    """duration_s 5 declared for a 7-s clip (the tiny model's window is 6 s): prepare measures the file and refuses
    it, and says that the CSV's value was wrong; 0.52 declared for a 0.5-s clip is rounding, not reported."""
    make_audio("mine/audio/long.wav", seconds=7.0)
    test_csv = presplit_corpus["test"]
    test_csv.write_text("clip_id,audio_path,label,group_id,duration_s\n"
                        "test0,audio/long.wav,SPEECH,grp2,5.0\ntest1,audio/test1.flac,NONSPEECH,grp2,0.52\n")
    code, err = run_cli(capsys, tmp_path / "project", presplit_params(make_params, presplit_corpus))
    one_line_error(code, err, f"{test_csv} row 1 (test0): clip of 7.00 s is longer than the model's 6 s audio window")
    warnings = [r.getMessage() for r in caplog.records if "differs from its audio file" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"{test_csv} row 1 (test0): duration_s 5 differs from its audio file's 7.000 s")
    assert str(tmp_path / "mine" / "audio" / "long.wav") in warnings[0] and "(1 of 2 rows differ)" in warnings[0]
    assert not (tmp_path / "project" / layout.SPLIT_DIR).exists()


def test_durations_written_are_the_audio_files_and_missing_spellings_are_empty(make_params, presplit_corpus, tmp_path,
                                                                               caplog):
    """duration_s 9 declared for a 0.5-s clip no longer counts as long: the split CSV and metrics/data.json carry
    0.5 s; an snr_db written NA or nan (as R and numpy write a missing value) is read as missing, written empty."""
    test_csv = presplit_corpus["test"]
    test_csv.write_text("clip_id,audio_path,label,group_id,duration_s,snr_db\n"
                        "test0,audio/test0.flac,SPEECH,grp2,9,NaN\ntest1,audio/test1.flac,NONSPEECH,grp2,NA,NA\n")
    out, metrics = prepare_in(tmp_path / "project", presplit_params(make_params, presplit_corpus))
    written = pd.read_csv(out / "test_metadata.csv", keep_default_na=False)
    assert written[schema.DURATION_S].tolist() == pytest.approx([0.5, 0.5])  # make_audio's 0.5 s, at 44.1 kHz
    assert written[schema.SNR_DB].tolist() == ["", ""]
    data = json.loads(metrics.read_text())
    assert data["test"]["duration_s_max"] == pytest.approx(0.5) and data["total"]["duration_s_total"] == pytest.approx(3.0)
    assert f"{test_csv} row 1 (test0): duration_s 9 differs from its audio file's 0.500 s" in caplog.text


@pytest.mark.parametrize("edit, words", [
    (("grp2", "grp0 "), ["row 1: group_id 'grp0 ' has leading or trailing whitespace"]),
    (("grp2", "GRP0"), ["row 1: group 'GRP0' (spelled 'grp0' there) is also in train", "move all its clips"]),
    (("test1,", "train1,"), ["row 2: clip_id 'train1' is also in train", "train.csv row 2)"]),
    (("audio/test1.flac", "audio/train1.flac"), ["row 2: audio file", "train1.flac is also in train", "train.csv row 2)"]),
])
def test_presplit_group_clip_or_audio_in_two_splits_is_rejected(make_params, presplit_corpus, tmp_path, capsys, edit,
                                                                 words):
    test_csv = presplit_corpus["test"]
    test_csv.write_text(test_csv.read_text().replace(*edit))
    code, err = run_cli(capsys, tmp_path / "project", presplit_params(make_params, presplit_corpus))
    one_line_error(code, err, *[f"{test_csv} {words[0]}", *words[1:]])
    assert not (tmp_path / "project" / layout.SPLIT_DIR).exists()


def test_csv_audio_file_under_two_groups_is_rejected(make_params, user_corpus, tmp_path, capsys):
    """The same file as a clip of spk0 and of spk5 could be split into train and test: refused before splitting."""
    source = pd.read_csv(user_corpus)
    source.loc[16, "audio_path"] = source.loc[1, "audio_path"]  # g5_c1 (spk5) now points at g0_c1's file (spk0)
    source.to_csv(user_corpus, index=False)
    params = make_params({"data": {"source": "csv", "csv": {"path": str(user_corpus)}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, f"{user_corpus} row 17 (g5_c1): audio file", f"is also listed at {user_corpus} row 2 (g0_c1)",
                   "remove one of the two rows")


def test_csv_one_file_twice_in_one_group_is_refused(user_corpus, tmp_path):
    """Two clip ids of one group on one file would count one recording twice: refused, naming both rows."""
    source = pd.read_csv(user_corpus)
    source.loc[2, "audio_path"] = source.loc[1, "audio_path"]  # g0_c2 (spk0) now points at g0_c1's file (spk0)
    source.to_csv(user_corpus, index=False)
    message = refused_by_prepare(user_corpus, tmp_path / "out")
    assert message.startswith(f"{user_corpus} row 3 (g0_c2): audio file {user_corpus.parent / source.loc[1, 'audio_path']} "
                              f"is also listed at {user_corpus} row 2 (g0_c1); a recording may be listed once")


@pytest.mark.parametrize("where", ["test", "train"])
def test_presplit_byte_identical_copy_under_another_path_is_refused(make_params, presplit_corpus, tmp_path, capsys,
                                                                    where):
    """A copy of train's first clip under another folder and name, listed in test under another group, or in train
    again under the same group: the paths differ, the bytes do not; refused naming both rows."""
    train_file = tmp_path / "mine" / "audio" / "train0.flac"
    copy = tmp_path / "mine" / "elsewhere" / "renamed.flac"
    copy.parent.mkdir()
    copy.write_bytes(train_file.read_bytes())
    csv = presplit_corpus[where]
    csv.write_text(csv.read_text().replace(f"audio/{where}1.flac", "elsewhere/renamed.flac"))
    code, err = run_cli(capsys, tmp_path / "project", presplit_params(make_params, presplit_corpus))
    one_line_error(code, err, f"{csv} row 2 ({where}1): audio file {copy} has the same content as {train_file}, listed at "
                   f"{presplit_corpus['train']} row 1 (train0)", "remove one of the two rows")
    assert not (tmp_path / "project" / layout.SPLIT_DIR).exists()


def test_only_files_of_a_shared_size_are_hashed(tmp_path, monkeypatch):
    """The duplicate check groups files by size and hashes only sizes shared by two files or more."""
    from speech_calibration.data import content_hash

    files = []
    for name, content in [("a", b"1" * 10), ("b", b"2" * 11), ("c", b"3" * 12), ("d", b"4" * 12), ("e", b"5" * 13)]:
        (tmp_path / name).write_bytes(content)
        files.append(str(tmp_path / name))
    hashed = []
    real = content_hash.sha256
    monkeypatch.setattr(content_hash, "sha256", lambda path: hashed.append(os.path.basename(path)) or real(path))
    assert content_hash.first_duplicate(files) is None and sorted(hashed) == ["c", "d"]
    (tmp_path / "f").write_bytes(b"2" * 11)  # a copy of b
    assert content_hash.first_duplicate(files + [str(tmp_path / "f"), files[0]]) == (1, 5, False)
    assert content_hash.first_duplicate([files[0], files[2], str(tmp_path / "x" / ".." / "a")]) == (0, 2, True)


def test_presplit_with_one_class_split_is_rejected(make_params, presplit_corpus, tmp_path, capsys):
    dev_csv = presplit_corpus["dev"]
    dev_csv.write_text(dev_csv.read_text().replace("NONSPEECH", "SPEECH"))
    params = make_params({"data": {"source": "presplit", "presplit": {s: str(p) for s, p in presplit_corpus.items()}}})
    code, err = run_cli(capsys, tmp_path / "project", params)
    one_line_error(code, err, str(dev_csv), "only SPEECH")


# ================================================================================================ slow
@pytest.mark.slow
def test_default_corpus_has_the_study_sizes(tmp_path):
    """The default params: the study's 64/6, 72/4, 24/3 split, half speech (its time is part of
    the ``dvc repro`` that benchmarks.cpu_pipeline measures)."""
    data = splits.data_metrics(splits.prepare(params_mod.load(ROOT / "params.yaml").data, tmp_path / "gs"))
    assert {s: (data[s]["clips"], data[s]["groups"]) for s in ("train", "dev", "test")} == {
        "train": (64, 6), "dev": (72, 4), "test": (24, 3)}
    assert np.isclose(data["total"]["speech_fraction"], 0.5)


def test_audio_outside_data_corpus_is_warned_about_once(tmp_path, monkeypatch, caplog):
    """DVC sees the corpus change through data.corpus only: audio the split CSVs list outside it gets one warning with
    the count and an example; audio inside it (relative to the split folder, as prepare writes it) none."""
    monkeypatch.chdir(tmp_path)
    data = params_mod.parse(params_mod.Data, {"source": "csv", "corpus": "data/raw", "csv": {"path": "data/raw/m.csv"}},
                            "data")
    inside = pd.DataFrame({schema.AUDIO_PATH: ["../../raw/audio/a.wav", "../../raw/audio/b.wav"]})
    outside = pd.DataFrame({schema.AUDIO_PATH: ["../../raw/audio/c.wav", "/elsewhere/d.wav"]})
    with caplog.at_level("WARNING"):
        splits.warn_audio_outside_corpus(data, {"train": inside, "dev": inside}, layout.SPLIT_DIR)
    assert not caplog.records
    with caplog.at_level("WARNING"):
        splits.warn_audio_outside_corpus(data, {"train": inside, "test": outside}, layout.SPLIT_DIR)
    assert len(caplog.records) == 1 and caplog.records[0].getMessage().startswith(
        "1 of 4 audio files lie outside data.corpus (data/raw), e.g. /elsewhere/d.wav: DVC does not see them change")


def test_prepare_warns_about_audio_outside_data_corpus(user_corpus, tmp_path, caplog):
    """The warning comes from prepare itself: one clip of the 30 moved outside the corpus folder is counted."""
    import shutil

    frame = pd.read_csv(user_corpus)
    elsewhere = tmp_path / "elsewhere" / Path(frame.loc[1, "audio_path"]).name
    elsewhere.parent.mkdir()
    shutil.move(user_corpus.parent / frame.loc[1, "audio_path"], elsewhere)
    frame.loc[1, "audio_path"] = str(elsewhere)
    frame.to_csv(user_corpus, index=False)
    data = params_mod.parse(params_mod.Data, {"source": "csv", "corpus": str(user_corpus.parent),
                                              "csv": {"path": str(user_corpus)}}, "data")
    with caplog.at_level("WARNING"):
        splits.prepare(data, tmp_path / "out")
    warned = [r.getMessage() for r in caplog.records if "outside data.corpus" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"1 of 30 audio files lie outside data.corpus ({user_corpus.parent})")
