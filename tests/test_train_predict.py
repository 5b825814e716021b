"""Real LoRA training steps on the tiny model, adapters saved and reloaded, and the predict stage's output."""
from __future__ import annotations

import dataclasses
import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.data import schema
from speech_calibration.data.audio import load_clips
from speech_calibration.errors import UserError
from speech_calibration.model import loading
from speech_calibration.model.inputs import InputBuilder
from speech_calibration.model.scoring import Scorer, score_audio, score_csvs
from speech_calibration.model.training import train
from tests.model_helpers import ROOT, make_project, tiny_model_dir

pytestmark = pytest.mark.slow  # every test here trains the tiny model (or runs the predict stage as a process)

@pytest.fixture(scope="module")
def project(tmp_path_factory):
    model_dir = tiny_model_dir(str(tmp_path_factory.getbasetemp()))
    root = make_project(tmp_path_factory.mktemp("project"), model_dir, overrides={"train.epochs": 4})
    return root


@pytest.fixture(scope="module")
def training(project):
    """Seed 42 trained into models/seed_42 once: (params, train_info, the trained PeftModel as ``train`` left it in
    memory, taken from ``loading.add_lora``, which ``train`` calls once to wrap the base model)."""
    built = []

    def add_lora(model, cfg, _real=loading.add_lora):
        built.append(_real(model, cfg))
        return built[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setattr(loading, "add_lora", add_lora)
        p = params_mod.load("params.yaml")
        info = train(p, 42, project / "models/seed_42", project / "metrics/train/seed_42")
    (model,) = built
    return p, info, model


@pytest.fixture(scope="module")
def trained(training):
    p, info, _ = training
    return p, info


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_training_writes_a_loadable_adapter_and_the_loss_falls(project, trained):
    _, info = trained
    out = project / "models/seed_42"
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert info["steps"] == 4 * 3  # 24 train clips, batch 8, 4 epochs
    loss = pd.read_csv(project / "metrics/train/seed_42/plots/metrics/train/loss.tsv", sep="\t")["loss"].to_numpy()
    assert len(loss) == info["steps"]
    assert loss[-3:].mean() < loss[:3].mean() - 0.1
    acc = pd.read_csv(project / "metrics/train/seed_42/plots/metrics/train/accuracy_epoch.tsv", sep="\t")
    assert len(acc) == 4
    assert (project / "metrics/train/seed_42/plots/metrics/train/learning_rate.tsv").is_file()


def test_same_seed_gives_the_same_adapter_bit_for_bit(project, trained, monkeypatch):
    p, _ = trained
    monkeypatch.chdir(project)
    train(p, 42, project / "models/again", project / "metrics/train/again")
    assert _sha(project / "models/again/adapter_model.safetensors") == _sha(project / "models/seed_42/adapter_model.safetensors")
    train(p, 7, project / "models/other", project / "metrics/train/other")
    assert _sha(project / "models/other/adapter_model.safetensors") != _sha(project / "models/seed_42/adapter_model.safetensors")


def test_features_computed_once_train_the_same_adapter_bit_for_bit(project, trained, monkeypatch):
    """On the CPU ``train`` computes the split's features once (``FeatureCache``); computing them for every batch, as
    it does on a GPU or past the cache's size, gives the same adapter to the last bit."""
    p, _ = trained
    monkeypatch.chdir(project)
    train(p, 42, project / "models/uncached", project / "metrics/train/uncached", feature_cache_bytes=0)
    adapter = "adapter_model.safetensors"
    assert _sha(project / "models/uncached" / adapter) == _sha(project / "models/seed_42" / adapter)


def test_saved_adapter_holds_every_adapted_module_bit_for_bit(project, training):
    """models/seed_42/adapter_model.safetensors holds the lora_A and lora_B of every module the trained model adapts
    (decoder attention + MLP and encoder attention: 7 per decoder layer, 4 per encoder layer, counted from the
    model's config), each equal to the trained tensor to the last bit."""
    from safetensors.torch import load_file

    p, info, model = training
    saved = load_file(project / "models/seed_42/adapter_model.safetensors")
    modules = sorted({re.sub(r"^base_model\.model\.", "", k).rsplit(".lora_", 1)[0] for k in saved})
    assert modules == loading.adapted_modules(model) == info["adapted_modules"]
    config = loading.unwrap(model).config
    assert p.lora.mlp_targets and p.lora.encoder_targets
    assert len(modules) == 7 * config.text_config.num_hidden_layers + 4 * config.audio_config.encoder_layers
    trained_lora = {n: q for n, q in model.named_parameters() if ".lora_" in n}
    assert len(trained_lora) == len(saved) == 2 * len(modules)
    for key, tensor in saved.items():  # peft saves "<module>.lora_A.weight" for the parameter "<module>.lora_A.default.weight"
        assert torch.equal(tensor, trained_lora[re.sub(r"\.(lora_[AB])\.", r".\1.default.", key)]), key


def test_reloaded_adapter_gives_the_trained_models_logits_and_generation_agrees(project, training, monkeypatch):
    """The adapter as predict loads it gives the logits of the model just trained, scored in memory (nothing read
    back). Unmerged, without the cached prompt prefix: the same operations on the same weights, equal to the last
    bit. As predict scores (``Scorer``'s defaults: merged into the base weights, prefix cached): within 1e-5, fp32
    round-off (a merged weight W + (alpha/r) B A is rounded once more, the prefix runs as a separate pass; measured
    1.4e-6 on logits of |x| < 7, where one fp32 ulp is 4.8e-7; tests/test_merge.py bounds the merge the same way).
    A lost part of the adapter moves them far more: without its encoder LoRA by 0.5, without its MLP LoRA by 1.3."""
    p, _, model = training
    monkeypatch.chdir(project)
    meta = schema.read_metadata(layout.split_csv("dev"))
    audios = load_clips(list(meta["audio_file"]), 16000)
    model.eval()  # train leaves it in training mode (LoRA dropout on)
    builder = InputBuilder(loading.load_processor(p.model), p.prompt)
    in_memory = score_audio(model, builder, audios, batch_size=p.predict.batch_size, device=torch.device("cpu"),
                            dtype=torch.float32, trim=p.model.trim_audio_window, progress=False)
    plain = dataclasses.replace(p.model, merge_adapter=False, cache_prompt_prefix=False)
    same_path = Scorer(dataclasses.replace(p, model=plain), project / "models/seed_42").score(audios)
    scorer = Scorer(p, project / "models/seed_42")
    assert loading.adapted_modules(scorer.model) == [] and scorer.prefix is not None  # merged, prefix cached
    second = scorer.score(audios)
    for key in (schema.LOGIT_A, schema.LOGIT_B, schema.LOGSUMEXP_VOCAB):
        np.testing.assert_array_equal(same_path[key], in_memory[key], err_msg=key)
        np.testing.assert_allclose(second[key], in_memory[key], rtol=0, atol=1e-5, err_msg=key)
    # the adapter really changes the model
    base = Scorer(p, None).score(audios)
    assert np.abs(base["logit_A"] - in_memory["logit_A"]).max() > 0.1

    # greedy one-token generation restricted to A/B agrees with our argmax on every clip
    answers = _generated_answers(scorer, audios)
    assert len(set(answers)) == 2, "the trained toy model should answer both A and B on dev"
    np.testing.assert_array_equal(answers, np.where(second["logit_A"] >= second["logit_B"], *scorer.builder.answer_ids))


def _generated_answers(scorer, audios) -> np.ndarray:
    """Each clip's answer token from ``generate`` (greedy, one token, restricted to A/B) on the processor's own inputs."""
    from transformers import LogitsProcessor, LogitsProcessorList

    answers = list(scorer.builder.answer_ids)

    class OnlyAnswers(LogitsProcessor):
        def __call__(self, input_ids, scores):
            keep = torch.full_like(scores, float("-inf"))
            keep[:, answers] = scores[:, answers]
            return keep

    out = []
    for clip in audios:
        inputs = scorer.builder.processor(text=[scorer.builder.text], audio=[clip], sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            out.append(int(scorer.model.generate(**inputs, max_new_tokens=1, do_sample=False,
                                                 logits_processor=LogitsProcessorList([OnlyAnswers()]))[0, -1]))
    return np.array(out)


def test_predict_writes_the_contract_and_scores_are_order_independent(project, trained, monkeypatch):
    p, _ = trained
    monkeypatch.chdir(project)
    scorer = Scorer(p, project / "models/seed_42")
    frames = score_csvs(p, scorer, {"dev": layout.split_csv("dev"), "test": layout.split_csv("test")},
                        project / "predictions/seeds/seed_42")
    dev = schema.read_predictions(project / "predictions/seeds/seed_42/dev.csv")
    assert list(dev.columns[:9]) == list(schema.PREDICTIONS_COLUMNS)
    assert "duration_s" in dev.columns  # optional metadata carried through
    np.testing.assert_allclose(dev["p_speech"], 1 / (1 + np.exp(dev["logit_B"] - dev["logit_A"])), rtol=1e-6)
    # p(A)+p(B) can never exceed the full vocabulary's mass
    assert (np.logaddexp(dev["logit_A"], dev["logit_B"]) <= dev["logsumexp_vocab"] + 1e-5).all()
    free = pd.read_csv(project / "predictions/seeds/seed_42/dev_content_free.csv")
    assert list(free["input"]) == ["silence", "noise"]
    # batch size does not change any clip's logits (clips of 0.2 to 5 s share batches)
    meta = schema.read_metadata(layout.split_csv("test"))
    audios = load_clips(list(meta["audio_file"]), 16000)
    one = Scorer(params_mod.parse(params_mod.Params, {**_raw(project), "predict": {"batch_size": 1}}, ""),
                 project / "models/seed_42").score(audios)
    np.testing.assert_allclose(one["logit_A"], frames["test"]["logit_A"], atol=1e-5)
    np.testing.assert_allclose(one["logit_B"], frames["test"]["logit_B"], atol=1e-5)
    # nor does the order of the clips: scored shuffled, each clip's logits come back in its own row. (The scorer sorts
    # by length and restores the given order; a restore that returned the sorted order would agree between batch
    # sizes above, but not here.) Same tolerance: ties in length may batch the clips differently
    perm = np.random.default_rng(3).permutation(len(audios))
    assert (perm != np.arange(len(audios))).any()
    shuffled = scorer.score([audios[i] for i in perm])
    for key in (schema.LOGIT_A, schema.LOGIT_B, schema.LOGSUMEXP_VOCAB):
        np.testing.assert_allclose(shuffled[key][np.argsort(perm)], frames["test"][key], atol=1e-5, err_msg=key)


def _csv_with_long_clip(project: Path, folder: Path) -> Path:
    """``folder/extra_metadata.csv``: the test split (absolute audio paths) and, last, ``long_clip``: 7 s of audio
    (``folder/long.wav``) against the tiny model's 6 s window: faint noise, and speech in its last second only, which
    the window [1, 7] s hears and the first window, [0, 6] s, does not."""
    from speech_calibration.data.audio import write_audio

    test_csv = project / layout.split_csv("test")
    meta = pd.read_csv(test_csv)
    files = schema.read_metadata(test_csv)["audio_file"]
    meta["audio_path"] = [str(Path(f).resolve()) for f in files]
    speech = load_clips([files.iloc[0]])[0]
    long_audio = np.random.default_rng(0).standard_normal(7 * 16000).astype(np.float32) * 0.01
    long_audio[-16000:] += speech[:16000]  # something to hear in the last window only
    write_audio(folder / "long.wav", long_audio)
    long_row = {**meta.iloc[0].to_dict(), "clip_id": "long_clip", "audio_path": str(folder / "long.wav"),
                "duration_s": 7.0}
    csv = folder / "extra_metadata.csv"
    pd.concat([meta, pd.DataFrame([long_row])], ignore_index=True).to_csv(csv, index=False)
    return csv


def test_each_long_clip_policy_on_the_trained_model(project, trained, tmp_path, monkeypatch):
    """7 s of audio against the tiny model's 6 s window. error: one line naming the CSV row, nothing written;
    truncate: the clip scores as its first 6 s; windows: as the better (larger SPEECH log-odds) of its two
    6-s windows, [0, 6] s and [1, 7] s, each scored on its own."""
    p, _ = trained
    monkeypatch.chdir(project)
    csv = _csv_with_long_clip(project, tmp_path)
    n_rows = len(pd.read_csv(csv))
    scorer = Scorer(p, project / "models/seed_42")
    out = tmp_path / "predictions"
    with pytest.raises(UserError, match=rf"^{csv} row {n_rows} \(long_clip\): clip of 7\.00 s is longer than "
                                        r"the model's 6 s audio window"):
        score_csvs(p, scorer, {"dev": layout.split_csv("dev"), "extra": csv}, out)
    assert not out.exists()

    heard = load_clips([tmp_path / "long.wav"])[0]
    pieces = scorer.score([heard[:6 * 16000], heard[16000:]])
    log_odds = pieces["logit_A"] - pieces["logit_B"]
    # the speech is in the last window only, so it is the more SPEECH-like: windows must pick it, truncate cannot
    assert log_odds[1] > log_odds[0] + 1e-2, log_odds
    for policy, expect_index in (("truncate", 0), ("windows", 1)):
        q = dataclasses.replace(p, audio=params_mod.Audio(long_clips=policy))
        frame = score_csvs(q, scorer, {"extra": csv}, tmp_path / policy)["extra"].set_index("clip_id")
        assert frame.loc["long_clip", "logit_A"] == pytest.approx(pieces["logit_A"][expect_index], abs=1e-5), policy
        assert frame.loc["long_clip", "logit_B"] == pytest.approx(pieces["logit_B"][expect_index], abs=1e-5), policy
        if policy == "windows":
            assert frame.loc["long_clip", "n_windows"] == 2 and (frame.drop(index="long_clip")["n_windows"] == 1).all()
        else:
            assert "n_windows" not in frame.columns


def _raw(project):
    import yaml

    return yaml.safe_load((project / "params.yaml").read_text())


def _params_with(project, section: str, **values) -> params_mod.Params:
    """The project's params with ``values`` replacing those keys of ``section``."""
    raw = _raw(project)
    return params_mod.parse(params_mod.Params, {**raw, section: {**raw[section], **values}}, "")


def test_predict_cli_errors_are_one_line(project, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "stages.predict", *args], cwd=project, capture_output=True,
                              text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})

    missing = run("--seed", "999")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines()[-1].startswith("error: models/seed_999: no adapter_config.json")
    assert "Traceback" not in missing.stderr
    bad = run("--zero-shot", "--seed", "42")
    assert bad.returncode == 2 and "not allowed with argument" in bad.stderr.strip().splitlines()[-1]
    assert "Traceback" not in bad.stderr


def _wrapper(project, script, *args):
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=project, capture_output=True,
                          text=True, env=env)


def test_study_command_lines_reproduce_the_stages(project, trained):
    # the study's training command = the train stage with lora.mlp_targets from --add_mlp_targets
    done = _wrapper(project, "finetune_qwen_audio.py", "--seed", "42", "--output_dir", "checkpoints/seed_42",
                    "--add_mlp_targets")
    assert done.returncode == 0, done.stderr[-1500:]
    assert _sha(project / "checkpoints/seed_42/final/adapter_model.safetensors") == \
        _sha(project / "models/seed_42/adapter_model.safetensors")
    # the study's scoring command: same logits as predict, p_speech at the given temperature, same decisions
    done = _wrapper(project, "evaluate_with_logits.py", "--checkpoint", "checkpoints/seed_42/final", "--test_csv",
                    "data/processed/grouped_split/test_metadata.csv", "--temperature", "2.0",
                    "--output_csv", "results/seed_42_test.csv")
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.startswith("Overall:")
    out = pd.read_csv(project / "results/seed_42_test.csv")
    p, _ = trained
    scorer = Scorer(p, project / "models/seed_42")
    meta = schema.read_metadata(project / "data/processed/grouped_split/test_metadata.csv")
    ref = scorer.score(load_clips(list(meta["audio_file"]), 16000))
    np.testing.assert_allclose(out["logit_A"], ref["logit_A"], atol=1e-6)
    np.testing.assert_allclose(out["p_speech"], 1 / (1 + np.exp(-(out["logit_A"] - out["logit_B"]) / 2.0)), rtol=1e-6)
    assert (out["predicted_token"] == np.where(out["logit_A"] >= out["logit_B"], "A", "B")).all()
    # a calibrator file the pipeline would write, through the one load: a platt map with a tuned threshold
    from speech_calibration.calibration.calibrators import PlattScaling

    PlattScaling({"slope": 0.5, "bias": -1.0}, threshold=0.3).save(project / "results/platt.json")
    done = _wrapper(project, "evaluate_with_logits.py", "--checkpoint", "checkpoints/seed_42/final", "--test_csv",
                    "data/processed/grouped_split/test_metadata.csv", "--calibrator", "results/platt.json",
                    "--output_csv", "results/seed_42_test_platt.csv")
    assert done.returncode == 0, done.stderr[-1500:]
    platt = pd.read_csv(project / "results/seed_42_test_platt.csv")
    z = platt["logit_A"] - platt["logit_B"]
    np.testing.assert_allclose(platt["p_speech"], 1 / (1 + np.exp(-(0.5 * z - 1.0))), rtol=1e-6)
    assert (platt["predicted_token"] == np.where(platt["p_speech"] >= 0.3, "A", "B")).all()
    bad = _wrapper(project, "evaluate_with_logits.py", "--checkpoint", "none", "--test_csv", "x.csv",
                   "--temperature", "-1", "--output_csv", "y.csv")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --temperature: -1.0 must be a positive finite number"


def _params_file(project: Path, path: Path, **sections) -> Path:
    """The project's params.yaml with some ``section={key: value}`` changed, written to ``path``."""
    import yaml

    raw = _raw(project)
    for section, values in sections.items():
        raw[section] = {**raw[section], **values}
    path.write_text(yaml.safe_dump(raw))
    return path


def _error_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-1500:]
    return [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]


def test_study_scoring_command_scores_as_predict_does(project, trained, tmp_path, monkeypatch):
    """evaluate_with_logits.py goes through predict's scoring: with audio.long_clips=windows the 7-s clip is scored
    as two windows and every clip's logits equal those the predict stage's score_csvs gives the same CSV. It leaves
    nothing in the temporary folder (a review found predict's files there after every run)."""
    p, _ = trained
    monkeypatch.chdir(project)
    csv = _csv_with_long_clip(project, tmp_path)
    params = _params_file(project, tmp_path / "windows.yaml", audio={"long_clips": "windows"})
    scratch = tmp_path / "tmpdir"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the wrapper's process takes it from its environment
    done = _wrapper(project, "evaluate_with_logits.py", "--checkpoint", "models/seed_42", "--test_csv", str(csv),
                    "--output_csv", str(tmp_path / "out.csv"), "--params", str(params))
    assert done.returncode == 0, done.stderr[-1500:]
    assert list(scratch.iterdir()) == []
    out = pd.read_csv(tmp_path / "out.csv")
    q = params_mod.load(params)
    predict = score_csvs(q, Scorer(q, project / "models/seed_42"), {"extra": csv}, tmp_path / "predict")["extra"]
    assert list(out["clip_id"]) == list(predict["clip_id"])
    for col in ("logit_A", "logit_B", "logsumexp_vocab", "n_windows"):
        np.testing.assert_allclose(out[col], predict[col], atol=1e-6, err_msg=col)
    assert out.set_index("clip_id").loc["long_clip", "n_windows"] == 2


def test_study_scoring_command_refuses_a_long_clip_by_default(project, tmp_path):
    """audio.long_clips=error (the default): one line naming the clip's CSV row, no output written."""
    csv = _csv_with_long_clip(project, tmp_path)
    n_rows = len(pd.read_csv(csv))
    done = _wrapper(project, "evaluate_with_logits.py", "--checkpoint", "none", "--test_csv", str(csv),
                    "--output_csv", str(tmp_path / "out.csv"))
    lines = _error_lines(done)
    assert len(lines) == 1 and lines[0].startswith(
        f"error: {csv} row {n_rows} (long_clip): clip of 7.00 s is longer than the model's 6 s audio window"), lines
    assert not (tmp_path / "out.csv").exists()


def test_inputs_are_checked_before_the_model_loads(project, tmp_path):
    """With model.name_or_path naming no folder, loading the model fails; a missing CSV or calibrator is reported
    instead, so it was checked first (a typo costs no model load)."""
    params = str(_params_file(project, tmp_path / "no_model.yaml", model={"name_or_path": str(tmp_path / "absent")}))
    test_csv = "data/processed/grouped_split/test_metadata.csv"

    def evaluate(*args):
        return _error_lines(_wrapper(project, "evaluate_with_logits.py", "--checkpoint", "none", "--params", params,
                                     "--output_csv", str(tmp_path / "out.csv"), *args))

    assert evaluate("--test_csv", "typo.csv") == ["error: typo.csv: file not found"]
    lines = evaluate("--test_csv", test_csv, "--calibrator", "typo.json")
    assert len(lines) == 1 and lines[0].startswith("error: typo.json: file not found"), lines
    lines = evaluate("--test_csv", test_csv)  # the inputs are good: now the model is loaded, and fails
    assert len(lines) == 1 and lines[0].startswith("error: model.name_or_path:"), lines
    done = subprocess.run([sys.executable, "-m", "stages.predict", "--zero-shot", "--conditions", "--params", params],
                          cwd=project, capture_output=True, text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert _error_lines(done) == [f"error: {layout.conditions_csv()}: file not found"]


def test_study_training_command_says_when_it_drops_the_mlp_targets(project, tmp_path):
    """params.yaml's lora.mlp_targets: true without --add_mlp_targets: one warning that this run trains another model
    than the train stage (before training, which here stops at a model folder that does not exist)."""
    no_model = {"name_or_path": str(tmp_path / "absent")}

    def warnings(*flag, mlp_targets):
        params = _params_file(project, tmp_path / "p.yaml", model=no_model, lora={"mlp_targets": mlp_targets})
        done = _wrapper(project, "finetune_qwen_audio.py", "--seed", "1", "--output_dir", str(tmp_path / "ck"),
                        "--params", str(params), *flag)
        assert _error_lines(done)[0].startswith("error: model.name_or_path:"), done.stderr[-1500:]
        return [ln for ln in done.stderr.splitlines() if "--add_mlp_targets" in ln]

    (line,) = warnings(mlp_targets=True)
    assert "WARNING" in line and "lora.mlp_targets=false" in line and "dvc repro train" in line
    assert warnings("--add_mlp_targets", mlp_targets=True) == []
    assert warnings(mlp_targets=False) == []


def test_shared_prompt_prefix_trains_the_same_adapter(project, monkeypatch):
    """train.share_prompt_prefix (the prefix once per batch) through the stage: the same adapter as the plain
    stage within float noise (without LoRA dropout, whose masks differ; tests/test_modeling.py checks the
    gradients themselves)."""
    from safetensors.torch import load_file

    monkeypatch.chdir(project)
    raw = _raw(project)
    raw = {**raw, "lora": {**raw["lora"], "dropout": 0.0}}
    adapters = {}
    for share in (False, True):
        p = params_mod.parse(params_mod.Params, {**raw, "train": {**raw["train"], "share_prompt_prefix": share}}, "")
        train(p, 42, project / f"models/share_{share}", project / f"metrics/train/share_{share}")
        adapters[share] = load_file(project / f"models/share_{share}/adapter_model.safetensors")
    assert adapters[True].keys() == adapters[False].keys()
    for k, ref in adapters[False].items():
        assert torch.allclose(adapters[True][k], ref, atol=1e-4), k
    with pytest.raises(UserError, match="train.share_prompt_prefix: needs model.trim_audio_window"):
        params_mod.parse(params_mod.Params, {**raw, "train": {**raw["train"], "share_prompt_prefix": True},
                                             "model": {**raw["model"], "trim_audio_window": False}}, "")


def test_gradient_accumulation_steps_on_the_mean_loss_of_its_window(project, monkeypatch):
    """24 clips as micro-batches of 8 accumulated in twos (windows of 16, then the epoch's last 8) train the adapter that
    batches of 16 (then 8) train, within float noise: the last window's one micro-batch counts in full, not half (as
    it did: 5.9e-3 apart). No LoRA dropout, whose masks differ, and no gradient clipping, which would hide a scale."""
    from safetensors.torch import load_file

    monkeypatch.chdir(project)
    raw = _raw(project)
    adapters = {}
    for batch_size, accumulate in ((16, 1), (8, 2)):
        p = params_mod.parse(params_mod.Params, {
            **raw, "lora": {**raw["lora"], "dropout": 0.0},
            "train": {**raw["train"], "batch_size": batch_size, "grad_accum": accumulate, "max_grad_norm": 1e9}}, "")
        info = train(p, 42, project / f"models/accumulate_{accumulate}", project / f"metrics/train/accumulate_{accumulate}")
        assert info["steps"] == 2 * raw["train"]["epochs"]
        adapters[accumulate] = load_file(project / f"models/accumulate_{accumulate}/adapter_model.safetensors")
    for k, ref in adapters[1].items():
        assert torch.allclose(adapters[2][k], ref, atol=1e-5), k


def test_question_first_trains_and_scores_like_generate_on_its_own_prompt(project, trained, monkeypatch):
    """prompt.question_first through train and Scorer: the question in the cached prefix, an adapter trained on that
    prompt (not the default's: same seed and data, so only the prompt can make them differ), our A/B argmax equal to
    one-token generation from the processor's own inputs of that prompt, and no scoring it with the other prompt."""
    monkeypatch.chdir(project)
    raw = _raw(project)
    p = params_mod.parse(params_mod.Params, {**raw, "prompt": {**raw["prompt"], "question_first": True}}, "")
    train(p, 42, project / "models/question_first", project / "metrics/train/question_first")
    assert _sha(project / "models/question_first/adapter_model.safetensors") != _sha(
        project / "models/seed_42/adapter_model.safetensors")
    scorer = Scorer(p, project / "models/question_first")
    assert p.prompt.user in scorer.builder.processor.tokenizer.decode(scorer.builder.prefix_ids)
    assert scorer.prefix is not None and scorer.prefix.length == len(scorer.builder.prefix_ids)
    audios = load_clips(list(schema.read_metadata(layout.split_csv("dev"))["audio_file"]), 16000)
    ours = scorer.score(audios)
    answers = _generated_answers(scorer, audios)
    assert len(set(answers)) == 2, "the trained toy model should answer both A and B on dev"
    np.testing.assert_array_equal(answers, np.where(ours["logit_A"] >= ours["logit_B"], *scorer.builder.answer_ids))

    default = trained[0]
    with pytest.raises(UserError, match=r"train_info.json: the adapter was trained with prompt.question_first = True, "
                                        r"but the params file has False; score with the prompt it was trained with"):
        Scorer(default, project / "models/question_first")
    with pytest.raises(UserError, match="trained with prompt.question_first = False"):
        Scorer(p, project / "models/seed_42")


def test_an_adapter_is_scored_only_on_the_base_it_was_trained_on(project, trained, tmp_path, monkeypatch):
    """A copy of the base model in another folder has the same shapes, so peft would load the adapter onto it without
    a word (review: two bases of one shape, e.g. Qwen2-Audio-7B and -7B-Instruct); the Scorer refuses, naming both.
    The same folder named another way (absolute against relative) is the same base; so is a train_info.json whose
    base_model was set to the new folder, as the message says."""
    import json
    import os
    import shutil

    monkeypatch.chdir(project)
    p, info = trained
    adapter = project / "models/seed_42"
    base = Path(info["base_model"])
    other_spelling = os.path.relpath(base.resolve(), project) if base.is_absolute() else str(base.resolve())
    assert other_spelling != info["base_model"]
    same = _params_with(project, "model", name_or_path=other_spelling)
    Scorer(same, adapter)  # the same folder, spelled another way (relative against absolute)
    moved = tmp_path / "moved-base"
    shutil.copytree(base, moved)
    elsewhere = _params_with(project, "model", name_or_path=str(moved))
    with pytest.raises(UserError, match=rf"train_info.json: the adapter was trained on the base model "
                                        rf"'{re.escape(str(info['base_model']))}', but the params file has model.name_or_path "
                                        rf"= '{re.escape(str(moved))}'; score it on the base it was trained on"):
        Scorer(elsewhere, adapter)
    copied = tmp_path / "adapter"
    shutil.copytree(adapter, copied)
    info_file = copied / "train_info.json"
    info_file.write_text(json.dumps({**json.loads(info_file.read_text()), "base_model": str(moved)}))
    Scorer(elsewhere, copied)  # the user said it is the same model
    missing = _params_with(project, "model", name_or_path=str(tmp_path / "nope"))
    with pytest.raises(UserError, match=r"model.name_or_path: '.*nope' does not exist"):
        Scorer(missing, adapter)  # a missing folder is reported as missing, not as another base


def test_train_refuses_a_tokenizer_from_another_checkpoint_than_the_weights(project, tmp_path, monkeypatch):
    """The train stage calls the scorer's check (test_modeling): a folder whose tokenizer's <|AUDIO|> id is not the
    config's audio_token_index is refused before any step, and no adapter is written."""
    import json
    import shutil

    monkeypatch.chdir(project)
    base = Path(_raw(project)["model"]["name_or_path"])
    assembled = tmp_path / "assembled"
    shutil.copytree(base, assembled)
    config = json.loads((assembled / "config.json").read_text())
    (assembled / "config.json").write_text(json.dumps({**config, "audio_token_index": config["audio_token_index"] + 1}))
    p = _params_with(project, "model", name_or_path=str(assembled))
    with pytest.raises(UserError, match=r"its config.json has audio_token_index \d+; the tokenizer and the weights"):
        train(p, 42, tmp_path / "adapter", tmp_path / "live")
    assert not (tmp_path / "adapter").exists()


def test_an_op_without_a_deterministic_form_is_one_line_unless_train_deterministic_is_off(project, monkeypatch,
                                                                                           tmp_path):
    """train.deterministic (the default): torch refuses an op without a deterministic form, and train says so in one
    line naming the key, leaving no adapter; false lets it run, with torch's warning. No CPU op lacks a deterministic
    form, so torch's own alert for one (what its CUDA kernels call) runs inside the training step."""
    from torch._prims_common import alert_not_deterministic

    from speech_calibration.model import forward

    real = forward.vocab_logits

    def with_alert(*args, **kwargs):
        alert_not_deterministic("scatter_add_cuda_kernel")
        return real(*args, **kwargs)

    monkeypatch.chdir(project)
    monkeypatch.setattr(forward, "vocab_logits", with_alert)
    strict = _params_with(project, "train", epochs=1)
    assert strict.train.deterministic
    with pytest.raises(UserError, match=r"^train.deterministic: scatter_add_cuda_kernel has no deterministic form on "
                                        r"this device; set train.deterministic: false to run it anyway"):
        train(strict, 42, tmp_path / "strict", tmp_path / "strict_live")
    assert not (tmp_path / "strict").exists()
    loose = _params_with(project, "train", epochs=1, deterministic=False)
    with pytest.warns(UserWarning, match="scatter_add_cuda_kernel does not have a deterministic implementation"):
        train(loose, 42, tmp_path / "loose", tmp_path / "loose_live")
    assert (tmp_path / "loose" / "adapter_model.safetensors").is_file()


def test_a_stopped_training_leaves_the_previous_adapter_and_curves_whole(project, trained, monkeypatch):
    """Ctrl-C (or SIGTERM, which cli.run turns into the same unwinding) in the middle of training: the adapter and the
    dvclive curves of the previous run are left byte for byte as they were, and no temporary folder is left beside
    them (review: dvclive wrote the curves in place, so a stopped run left 40 steps of curves beside a 160-step
    adapter)."""
    from speech_calibration.model import training

    monkeypatch.chdir(project)
    p, _ = trained
    adapter, live = project / "models/seed_42", project / "metrics/train/seed_42"
    before = {f: f.read_bytes() for folder in (adapter, live) for f in folder.rglob("*") if f.is_file()}
    assert any(f.suffix == ".tsv" for f in before) and any(f.name == "adapter_model.safetensors" for f in before)
    real, calls = training.answer_loss, []

    def stopped_at_the_third_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "answer_loss", stopped_at_the_third_batch)
    with pytest.raises(KeyboardInterrupt):
        train(p, 42, adapter, live)
    after = {f: f.read_bytes() for folder in (adapter, live) for f in folder.rglob("*") if f.is_file()}
    assert after == before
    assert not [f.name for f in (project / "models").iterdir() if f.name.startswith(".")]
    assert not [f.name for f in (project / "metrics/train").iterdir() if f.name.startswith(".")]


def test_a_stop_while_the_new_adapter_goes_in_waits_until_the_curves_are_in_too(project, trained, monkeypatch,
                                                                                  tmp_path, folder_swap):
    """Ctrl-C arriving right after the adapter folder is swapped (one step, where the system can) or the previous one
    moved aside (two renames, elsewhere), sent here by that call itself, waits until the new adapter and the new
    curves are both in place (review: the two folders were swapped one after the other, and a stop between them left
    the new adapter beside the previous curves)."""
    import os
    import shutil
    import signal

    from speech_calibration import fileio

    monkeypatch.chdir(project)
    p, _ = trained
    adapter, live = tmp_path / "adapter", tmp_path / "live"
    shutil.copytree(project / "models/seed_42", adapter)
    shutil.copytree(project / "metrics/train/seed_42", live)
    (adapter / "previous_run").write_text("")
    (live / "previous_run").write_text("")
    real_replace, real_exchange = os.replace, fileio._exchange

    def stopped_after_the_adapter_moves_aside(src, dst):
        real_replace(src, dst)
        if os.fspath(src) == os.fspath(adapter):
            os.kill(os.getpid(), signal.SIGINT)

    def stopped_after_the_adapter_is_swapped(a, b):
        swapped = real_exchange(a, b)
        if swapped and os.fspath(b) == os.fspath(adapter):
            os.kill(os.getpid(), signal.SIGINT)
        return swapped

    if folder_swap == "two renames":
        monkeypatch.setattr(os, "replace", stopped_after_the_adapter_moves_aside)
    else:
        monkeypatch.setattr(fileio, "_exchange", stopped_after_the_adapter_is_swapped)
    with pytest.raises(KeyboardInterrupt):
        train(p, 42, adapter, live)
    monkeypatch.undo()
    assert not (adapter / "previous_run").exists() and not (live / "previous_run").exists()  # both are the new run's
    assert (adapter / "adapter_model.safetensors").is_file() and any(live.rglob("*.tsv"))
    assert sorted(f.name for f in tmp_path.iterdir()) == ["adapter", "live"]

