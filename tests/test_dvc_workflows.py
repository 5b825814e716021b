"""DVC workflows end to end: the real `dvc` on a temporary copy of this project.

One session fixture (`study`, tests/conftest.py) copies the project into a temporary git repository,
shrinks the embedded default (two seeds, two epochs, a smaller corpus: tests/dvc_helpers.SHRINK) and runs
`dvc repro` once; tests that change anything work on a full copy of it (`work`). What is checked:

* a second `dvc repro` does nothing, and a run never edits dvc.yaml; dvclive writes where dvc.yaml says;
* a `calibration.*` change re-runs the analysis stages only (never prepare, train or predict);
  adding a seed trains only that seed; an edit to your own corpus (data.corpus) makes prepare changed;
* an experiment back at an earlier configuration is restored from DVC's run-cache, running nothing, and a seed
  trained in one clone is fetched through a remote in another (`dvc push --run-cache`, `dvc repro --pull`), not
  trained again;
* `dvc exp run -S`, `dvc exp show` (also compact, with --drop/--keep), a queued sweep run by
  `dvc queue start`, `dvc metrics diff`, `dvc plots diff`;
* `dvc metrics show` / `dvc plots show` find every metrics and plots file with no arguments; the page
  renders offline (.dvc/plots/offline.html) and, where Debian's chromium is installed, really draws
  in a headless browser;
* a colleague's round trip through a remote (a local folder, and S3 served by moto on loopback):
  push, clone, pull, byte-identical checkpoints and metrics, nothing to reproduce.

The structural checks at the bottom need no dvc run and are not marked slow.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from speech_calibration import layout
from tests.dvc_helpers import (
    PROJECT,
    SHRINK,
    commit_all,
    copy_repo,
    dvc,
    dvc_env,
    edit_params,
    exp_show_json,
    git,
    init_project,
    metrics_json,
    project_files,
    stage_names,
    stages_run,
    tree_digest,
)

UP_TO_DATE = "Data and pipelines are up to date"
# Stages a calibration change must never re-run (whatever else the pipeline grows).
UPSTREAM = re.compile(r"^(prepare|tiny_model|train@.*|predict@.*|predict_zeroshot|baselines.*)$")
# Folders whose bytes a colleague must get back from the remote.
ROUND_TRIP = ["models", "metrics", "predictions", "data/processed", "dvc.lock"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def analysis_stages(repo: Path) -> set[str]:
    """The stages a calibration change must re-run: calibrate and evaluate of every seed, the references,
    the aggregate and the conditions report (whichever of them the pipeline has)."""
    wanted = re.compile(r"^((calibrate|evaluate)@.*|references|aggregate|conditions)$")
    return {s for s in stage_names(repo) if wanted.match(s)}


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

# `study` (tests/conftest.py): the shrunk study, reproduced once per session (per pytest-xdist worker) and committed.

@pytest.fixture
def work(study, tmp_path) -> Path:
    """A private full copy of the reproduced study for a test that changes things."""
    return copy_repo(study, tmp_path / "repo")


@pytest.fixture(scope="module")
def platt(study, tmp_path_factory) -> dict:
    """One `dvc exp run -S calibration.method=platt` on a copy of the study (shared by several tests)."""
    repo = copy_repo(study, tmp_path_factory.mktemp("platt") / "repo")
    started = time.perf_counter()
    res = dvc("exp", "run", "-n", "platt", "-S", "calibration.method=platt", cwd=repo)
    seconds = time.perf_counter() - started
    print(f"\ncalibration-only `dvc exp run -S calibration.method=platt`: {seconds:.1f} s")
    return {"repo": repo, "out": res.stdout + res.stderr, "seconds": seconds}


# ---------------------------------------------------------------------------------------------
# the pipeline: nothing to do, only what depends on a change
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_repro_after_clean_run_does_nothing(study):
    res = dvc("repro", cwd=study)
    assert stages_run(res.stdout) == set(), res.stdout
    assert UP_TO_DATE in res.stdout
    assert UP_TO_DATE in dvc("status", cwd=study).stdout
    # a run wrote only declared outs: nothing new or changed for git either
    assert git("status", "--porcelain", cwd=study).stdout == ""


@pytest.mark.slow
def test_run_never_edits_dvc_yaml_and_dvclive_writes_where_declared(study):
    assert (study / "dvc.yaml").read_bytes() == (PROJECT / "dvc.yaml").read_bytes()
    for seed in SHRINK["seeds"]:
        live = study / "metrics" / "train" / f"seed_{seed}"
        assert (live / "metrics.json").is_file()
        assert sorted(p.name for p in (live / "plots" / "metrics" / "train").glob("*.tsv")), live
        assert not (live / "dvc.yaml").exists(), "dvclive must not write its own dvc.yaml (dvcyaml=None)"
    assert not (study / "dvclive").exists()


@pytest.mark.slow
def test_calibration_change_reruns_only_the_analysis(work):
    """What `dvc status` says a calibration change invalidates; that `dvc exp run` of it then runs exactly the
    analysis and no training or scoring is test_exp_run_calibration_only (one run serves both)."""
    analysis = analysis_stages(work)
    assert analysis, "no stage declares the calibration params"
    edit_params(work, {"calibration.method": "platt"})
    status = json.loads(dvc("status", "--json", cwd=work).stdout)  # the stages whose own params changed
    assert status and set(status) <= analysis, status
    assert not {s for s in status if UPSTREAM.match(s)}, status


@pytest.mark.slow
def test_adding_a_seed_trains_only_the_new_seed(work):
    new = 7
    seeds = [*SHRINK["seeds"], new]
    edit_params(work, {"seeds": seeds})
    res = dvc("repro", cwd=work)
    ran = stages_run(res.stdout)
    assert {f"train@{new}", f"predict@{new}"} <= ran, res.stdout
    old = {f"{stage}@{s}" for s in SHRINK["seeds"] for stage in ("train", "predict")}
    assert not ran & (old | {"prepare", "tiny_model", "predict_zeroshot"}), ran
    assert (work / "models" / f"seed_{new}").is_dir()
    assert UP_TO_DATE in dvc("status", cwd=work).stdout
    # back to the baseline (HEAD: `dvc repro` staged dvc.lock and the .gitignore files, core.autostage). `dvc checkout`
    # removes the new seed's cached outputs; its headline files stay behind, untracked, in the folder `aggregate`
    # writes whole, and so do the .gitignore files DVC wrote into its new dvclive folders, staged ...
    git("checkout", "HEAD", "--", ".", cwd=work)
    dvc("checkout", cwd=work)
    left = git("status", "--porcelain", "--untracked-files=all", cwd=work).stdout
    assert f"metrics/headline/seed_{new}/" in left and f"A  metrics/train/seed_{new}/.gitignore" in left, left
    assert UP_TO_DATE not in dvc("status", cwd=work).stdout
    # ... until the README's tidy command removes exactly them
    res = subprocess.run([sys.executable, "-m", "speech_calibration.tidy"], cwd=work, capture_output=True, text=True,
                         check=True)
    for gone in (f"metrics/headline/seed_{new}", f"metrics/train/seed_{new}"):
        assert f"removing {gone}\n" in res.stderr, res.stderr
    assert git("status", "--porcelain", cwd=work).stdout == ""
    assert not [p for root in layout.OUTPUT_ROOTS for p in (work / root).rglob(f"*seed_{new}*")]
    assert UP_TO_DATE in dvc("status", cwd=work).stdout


@pytest.mark.slow
def test_an_edit_to_your_corpus_makes_prepare_changed(tmp_path):
    """With your own corpus (data.source csv) prepare depends on the corpus folder (data.corpus): an edited label
    in its CSV, or an edited audio file (ignored by git), makes `dvc status` name prepare. Cheap: nothing runs;
    stand-ins for prepare's outputs and the base model's folder let `dvc commit` record the stage in dvc.lock."""
    repo = init_project(tmp_path / "repo", {"data.source": "csv", "data.csv.path": "data/raw/metadata.csv"})
    corpus = repo / "data" / "raw"
    csv = corpus / "metadata.csv"
    csv.write_text("clip_id,audio_path,label,group_id\nc1,audio/c1.wav,SPEECH,g1\n")
    wav = corpus / "audio" / "c1.wav"
    wav.parent.mkdir()
    wav.write_bytes(b"stand-in audio")
    for folder in (layout.TINY_MODEL_DIR, layout.SPLIT_DIR):
        (repo / folder).mkdir(parents=True)
        (repo / folder / "stand-in").write_text("x")
    (repo / layout.DATA_METRICS).write_text("{}")
    dvc("commit", "--force", "prepare", cwd=repo)

    def prepare_status() -> dict:
        return json.loads(dvc("status", "--json", "prepare", cwd=repo).stdout)

    assert prepare_status() == {}
    csv.write_text(csv.read_text().replace("SPEECH", "NONSPEECH"))
    assert prepare_status() == {"prepare": [{"changed deps": {"data/raw": "modified"}}]}
    csv.write_text(csv.read_text().replace("NONSPEECH", "SPEECH"))
    assert prepare_status() == {}
    wav.write_bytes(b"other audio")
    assert prepare_status() == {"prepare": [{"changed deps": {"data/raw": "modified"}}]}


# ---------------------------------------------------------------------------------------------
# metrics and plots, found with no arguments
# ---------------------------------------------------------------------------------------------

def _declared(repo: Path, kind: str) -> set[str]:
    """Every metrics/plots path of the resolved pipeline (stage outs and top-level entries)."""
    from dvc.repo import Repo

    with Repo(str(repo)) as r:
        paths = set()
        for stage in r.index.stages:
            paths |= {os.path.relpath(o.fs_path, repo) for o in getattr(stage, kind)}
        return paths


@pytest.mark.slow
def test_metrics_show_is_the_headline_table_that_fits_a_terminal(study):
    """The declared metrics are the headline files alone: one per system and series, seven short keys each, so
    `dvc metrics show` prints one row per file within 200 columns; the detailed JSONs are outputs, not metrics."""
    shown = metrics_json(study)
    declared = _declared(study, "metrics")
    assert declared == {"metrics/headline"}, declared
    systems = {"fine_tuned", *(f"seed_{s}" for s in SHRINK["seeds"]), "zeroshot"}
    expected = {f"metrics/headline/{system}/{series}.json" for system in systems
                for series in ("uncalibrated", "calibrated")}
    assert expected <= set(shown), sorted(expected - set(shown))
    for path, entry in shown.items():
        assert "error" not in entry, (path, entry)
        assert set(entry["data"]) == {"acc", "bacc", "auc", "ece", "sece", "nll", "brier"}, (path, entry)
    table = dvc("metrics", "show", cwd=study).stdout.splitlines()
    assert len(table) == len(shown) + 1, table
    assert max(map(len, table)) <= 200, max(map(len, table))


@pytest.mark.slow
def test_plots_show_finds_reliability_training_curves_and_images(study, tmp_path):
    shown = json.loads(dvc("plots", "show", "--json", cwd=study).stdout)
    assert not shown.get("errors"), shown.get("errors")
    plots = shown["data"]
    ids = set(plots)
    for seed in SHRINK["seeds"]:
        assert any(f"metrics/train/seed_{seed}/plots/metrics" in i and i.endswith("loss.tsv") for i in ids), ids
        rel = [i for i in ids if f"seed_{seed}" in i and "reliability" in i and i.endswith(".csv")]
        assert rel, f"no reliability plot of seed {seed} in {sorted(ids)}"
        assert any(f"seed_{seed}" in i and i.endswith(".png") for i in ids), ids
    # the reference systems' reliability beside the fine-tuned seeds' (top-level plots of dvc.yaml)
    for system in ("zeroshot", "baselines/silero", "baselines/webrtc"):
        assert f"evaluation/references/{system}/test_reliability.csv" in ids, sorted(ids)
    # the reliability plots use .dvc/plots/reliability.json: the diagonal layer and both series
    rel_id = next(i for i in ids if "test_reliability" in i and i.endswith(".csv"))
    spec = plots[rel_id][0]["content"]
    assert spec["layer"][0]["mark"]["type"] == "rule"
    values = spec["layer"][1]["data"]["values"]
    assert {v["series"] for v in values} == {"uncalibrated", "calibrated"}
    assert spec["layer"][1]["encoding"]["x"]["field"] == "confidence"
    assert spec["layer"][1]["encoding"]["y"]["field"] == "observed"


@pytest.mark.slow
def test_plots_page_is_offline_and_draws(study, tmp_path):
    out = tmp_path / "plots"
    dvc("plots", "show", "-o", str(out), cwd=study)
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page
    n_vega = page.count("vegaEmbed('#")
    n_images = page.count("<img")
    assert n_vega >= 2 * len(SHRINK["seeds"]) and n_images >= len(SHRINK["seeds"])
    if not CHROMIUM:
        pytest.skip("chromium is not installed (apt-get install chromium): the page was checked, not drawn")
    dom = browser(out / "index.html", tmp_path, "--dump-dom")
    assert dom.count("<canvas") == n_vega, "some Vega charts did not draw"
    png = tmp_path / "page.png"
    browser(out / "index.html", tmp_path, f"--screenshot={png}", "--window-size=1400,2400")
    assert png.is_file() and png.stat().st_size > 20_000
    _assert_drawn(png)


def browser(page: Path, tmp: Path, *args: str) -> str:
    """Headless chromium on a file:// page (no network, fresh profile); returns stdout."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp)  # a new empty profile each time
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--virtual-time-budget=15000", *args, page.as_uri()]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def _assert_drawn(png: Path) -> None:
    """The screenshot shows the two series colours of the reliability template and the grey diagonal."""
    from PIL import Image

    img = Image.open(png).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20)
    counts = {c: n for n, c in colours}

    def near(rgb, tol=40):
        return sum(n for c, n in counts.items() if all(abs(a - b) <= tol for a, b in zip(c, rgb)))

    assert near((0xd6, 0x27, 0x28)) > 200, "no red (uncalibrated) marks in the screenshot"
    assert near((0x1f, 0x77, 0xb4)) > 200, "no blue (calibrated) marks in the screenshot"


# ---------------------------------------------------------------------------------------------
# experiments
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_exp_run_calibration_only(platt):
    ran = stages_run(platt["out"])
    assert ran, platt["out"]
    assert not {s for s in ran if UPSTREAM.match(s)}, ran
    assert ran >= analysis_stages(platt["repo"])


RESTORED = re.compile(r"Stage '([^']+)' is cached - skipping run")


@pytest.mark.slow
def test_going_back_to_an_earlier_configuration_restores_it_from_the_run_cache(study, platt, tmp_path):
    """DVC's run-cache: after the platt experiment, an experiment with the baseline's calibration runs no stage
    command. Every analysis stage is restored from the runs the study's `dvc repro` saved, byte for byte."""
    repo = copy_repo(platt["repo"], tmp_path / "repo")
    res = dvc("exp", "run", "-S", "calibration.method=temperature", cwd=repo)
    out = res.stdout + res.stderr
    assert stages_run(out) == set(), out
    assert set(RESTORED.findall(out)) >= analysis_stages(repo), out
    folders = ["metrics", "evaluation", "models/calibrators", "plots"]
    assert tree_digest(repo, folders) == tree_digest(study, folders)


@pytest.mark.slow
def test_a_colleague_fetches_a_seed_trained_elsewhere_instead_of_training_it(work, tmp_path):
    """The run-cache through a remote: one clone trains a seed at `lora.r: 8`, pushes its outputs and, with
    `dvc push --run-cache`, the record of its runs. In a fresh clone of the baseline, after `dvc pull --run-cache`,
    `dvc repro --pull` at the same configuration trains nothing: the stage is restored, its adapter and training
    curves fetched from the remote byte for byte."""
    seed = SHRINK["seeds"][0]
    stage, trained = f"train@{seed}", [f"models/seed_{seed}", f"metrics/train/seed_{seed}"]
    dvc("remote", "add", "-d", "storage", str(tmp_path / "dvc-storage"), cwd=work)
    git("commit", "-q", "-m", "DVC remote", "--", ".dvc/config", cwd=work)
    dvc("push", cwd=work)  # the baseline
    assert edit_params(work, {"lora.r": 8}) == ["lora.r"]
    assert stages_run(dvc("repro", "-s", stage, cwd=work).stdout) == {stage}
    expected = tree_digest(work, trained)
    dvc("push", "--run-cache", cwd=work)  # the new adapter and curves, and the record of every run

    colleague = tmp_path / "colleague"
    git("clone", "-q", str(work), str(colleague), cwd=tmp_path)
    dvc("pull", "--run-cache", cwd=colleague)
    assert tree_digest(colleague, trained) != expected  # the baseline's adapter, trained at lora.r 16
    edit_params(colleague, {"lora.r": 8})
    res = dvc("repro", "--pull", "-s", stage, cwd=colleague)
    out = res.stdout + res.stderr
    assert stages_run(out) == set(), out
    assert RESTORED.findall(out) == [stage], out
    assert tree_digest(colleague, trained) == expected


@pytest.mark.slow
def test_keep_an_experiment_as_a_branch_then_return_to_the_baseline(platt, tmp_path):
    """The README's lifecycle: dvc exp branch keeps the experiment; git checkout + dvc checkout go back to the
    committed baseline; dvc exp remove forgets it; git and DVC then both report nothing to do."""
    repo = copy_repo(platt["repo"], tmp_path / "repo")
    assert git("status", "--porcelain", cwd=repo).stdout.strip()  # the experiment's results are in the workspace
    dvc("exp", "branch", "platt", "exp-platt", cwd=repo)
    assert "method: platt" in git("show", "exp-platt:params.yaml", cwd=repo).stdout
    # metrics diff between two commits: the baseline and the kept experiment
    diff = json.loads(dvc("metrics", "diff", "HEAD", "exp-platt", "--json", cwd=repo).stdout)
    assert any(path.endswith("/calibrated.json") for path in diff), diff
    git("checkout", "HEAD", "--", ".", cwd=repo)
    dvc("checkout", cwd=repo)
    dvc("exp", "remove", "platt", cwd=repo)
    assert git("status", "--porcelain", cwd=repo).stdout == ""
    assert UP_TO_DATE in dvc("status", cwd=repo).stdout
    assert "method: temperature" in (repo / "params.yaml").read_text()
    assert "platt" not in dvc("exp", "list", "--name-only", cwd=repo).stdout


@pytest.mark.slow
def test_exp_show_lists_the_experiment_with_its_metrics(platt):
    repo = platt["repo"]
    rows = exp_show_json(repo)
    exps = [e for row in rows for e in (row.get("experiments") or [])]
    names = {e["revs"][0]["name"] for e in exps if e.get("revs")}
    assert "platt" in names, names
    rev = next(e["revs"][0] for e in exps if e["revs"] and e["revs"][0]["name"] == "platt")
    data = rev["data"]
    assert data["params"]["params.yaml"]["data"]["calibration"]["method"] == "platt"
    metric_files = data["metrics"]
    for series in ("uncalibrated", "calibrated"):
        test = metric_files[f"metrics/headline/fine_tuned/{series}.json"]["data"]
        for key in ("ece", "acc", "auc"):
            assert isinstance(test[key], float), (series, key)
    # the compact table of the README (--md: a table that is never cut to the terminal's width)
    table = dvc("exp", "show", "--md", "--drop", ".*", "--keep", COMPACT_KEEP, cwd=repo).stdout
    assert max(len(line) for line in table.splitlines()) <= 200, table
    header = [c.strip() for c in table.splitlines()[0].strip("|").split("|")]
    expected = {f"metrics/headline/fine_tuned/calibrated.json:{key}" for key in ("ece", "acc")}
    assert set(header) == expected | {"Experiment", "calibration.method"}, header
    platt_row = next(line for line in table.splitlines() if "[platt]" in line)
    assert "platt" in platt_row.split("|")[header.index("calibration.method") + 1], platt_row


# `dvc exp show --drop '.*' --keep <this>`: the experiment, its calibration method and the calibrated test ECE
# and accuracy, averaged over seeds (metrics/headline/fine_tuned/), in under 200 columns
COMPACT_KEEP = r"Experiment|calibration\.method|metrics/headline/fine_tuned/calibrated\.json:(ece|acc)$"


@pytest.mark.slow
def test_metrics_diff_workspace_vs_head(platt):
    repo = platt["repo"]  # `dvc exp run` leaves the workspace at the experiment's results
    diff = json.loads(dvc("metrics", "diff", "--json", cwd=repo).stdout)
    changed = {path for path, keys in diff.items() if keys}
    assert any(path.endswith("/calibrated.json") for path in changed), diff
    # uncalibrated test metrics do not depend on the calibration method
    assert not [path for path in changed if path.endswith("/uncalibrated.json")], diff
    params = json.loads(dvc("params", "diff", "--json", cwd=repo).stdout)
    assert params["params.yaml"]["calibration.method"] == {"old": "temperature", "new": "platt"}


@pytest.mark.slow
def test_plots_diff_compares_two_experiments(platt, tmp_path):
    repo = platt["repo"]
    res = dvc("plots", "diff", "HEAD", "platt", "--json", cwd=repo)
    plots = json.loads(res.stdout)["data"]
    rel_id = next(i for i in plots if "test_reliability" in i and i.endswith(".csv"))
    revs = {v["rev"] for v in plots[rel_id][0]["content"]["layer"][1]["data"]["values"]}
    assert len(revs) == 2, revs
    if CHROMIUM:
        out = tmp_path / "diff"
        dvc("plots", "diff", "HEAD", "platt", "-o", str(out), cwd=repo)
        dom = browser(out / "index.html", tmp_path, "--dump-dom")
        assert dom.count("<canvas") == (out / "index.html").read_text().count("vegaEmbed('#")


@pytest.mark.slow
def test_queued_sweep_runs_in_temp_copies(work):
    """The queue's mechanics (a temporary copy, outputs from the cache, results back as an experiment), on an
    experiment that re-runs two stages (a test budget); the README's sweep queues calibration methods the same way."""
    repeats = [11]
    for r in repeats:
        dvc("exp", "run", "--queue", "-n", f"sweep-{r}", "-S", f"learning_curve.repeats={r}", cwd=work)
    try:
        dvc("queue", "start", "-j", "1", cwd=work)
        wait_for_queue(work, timeout=600)
    finally:
        dvc("queue", "stop", "--kill", cwd=work, check=False)
    status = dvc("queue", "status", cwd=work).stdout
    assert "Failed" not in status, status + "\n" + queue_logs(work, repeats)
    rows = exp_show_json(work)
    done = {e["revs"][0]["name"]: e["revs"][0] for row in rows for e in (row.get("experiments") or [])
            if e.get("revs")}
    for r in repeats:
        rev = done.get(f"sweep-{r}")
        assert rev is not None, (sorted(done), status)
        assert rev["data"]["params"]["params.yaml"]["data"]["learning_curve"]["repeats"] == r
        assert "metrics/headline/fine_tuned/calibrated.json" in rev["data"]["metrics"], rev["data"]["metrics"]
    # the workspace was not touched by the queued runs
    assert UP_TO_DATE in dvc("status", cwd=work).stdout


def wait_for_queue(repo: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = dvc("queue", "status", cwd=repo).stdout
        if not re.search(r"\b(Queued|Running)\b", status):
            return
        time.sleep(2)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def queue_logs(repo: Path, names) -> str:
    return "\n".join(dvc("queue", "logs", f"sweep-{n}", cwd=repo, check=False).stdout for n in names)


# ---------------------------------------------------------------------------------------------
# remotes: a colleague's round trip
# ---------------------------------------------------------------------------------------------

def _round_trip(work: Path, colleague: Path, env=None) -> None:
    """Push from `work` (remote already configured and committed), clone it, pull, compare."""
    before = tree_digest(work, ROUND_TRIP)
    shown = metrics_json(work)
    dvc("push", cwd=work, env=env)
    git("clone", "-q", str(work), str(colleague), cwd=work.parent)
    assert not (colleague / "models" / f"seed_{SHRINK['seeds'][0]}").exists()
    _copy_local_config(work, colleague)
    dvc("pull", cwd=colleague, env=env)
    assert tree_digest(colleague, ROUND_TRIP) == before
    assert UP_TO_DATE in dvc("status", cwd=colleague, env=env).stdout
    res = dvc("repro", cwd=colleague, env=env)
    assert stages_run(res.stdout) == set() and UP_TO_DATE in res.stdout, res.stdout
    assert metrics_json(colleague) == shown
    assert "in sync" in dvc("status", "--cloud", cwd=colleague, env=env).stdout.lower()


def _copy_local_config(src: Path, dest: Path) -> None:
    """Credentials live in .dvc/config.local (never committed); the colleague sets their own."""
    local = src / ".dvc" / "config.local"
    if local.is_file():
        shutil.copy2(local, dest / ".dvc" / "config.local")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_s3_remote_round_trip_with_moto(work, tmp_path):
    pytest.importorskip("dvc_s3", reason="the s3 extra is not installed (pip install -e '.[s3]')")
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (test extra)")
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        creds = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket="study")
        # botocore >= 1.36 adds CRC checksums by default; S3-compatible servers may not answer them
        env = dvc_env(AWS_REQUEST_CHECKSUM_CALCULATION="when_required",
                      AWS_RESPONSE_CHECKSUM_VALIDATION="when_required")
        for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"):
            env.pop(key, None)
        dvc("remote", "add", "-d", "s3store", "s3://study/dvcstore", cwd=work)
        dvc("remote", "modify", "s3store", "endpointurl", endpoint, cwd=work)
        dvc("remote", "modify", "s3store", "region", "us-east-1", cwd=work)
        dvc("remote", "modify", "--local", "s3store", "access_key_id", creds["AWS_ACCESS_KEY_ID"], cwd=work)
        dvc("remote", "modify", "--local", "s3store", "secret_access_key", creds["AWS_SECRET_ACCESS_KEY"], cwd=work)
        commit_all(work, "s3 dvc remote")
        assert "testing" not in (work / ".dvc" / "config").read_text(), "credentials must stay out of git"
        _round_trip(work, tmp_path / "colleague", env=env)
        listed = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing").list_objects_v2(Bucket="study", Prefix="dvcstore/")
        assert listed.get("KeyCount", 0) > 0
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------------
# structure: no dvc run needed
# ---------------------------------------------------------------------------------------------

def _stage_blocks() -> dict:
    return yaml.safe_load((PROJECT / "dvc.yaml").read_text())["stages"]


def _entries(block: dict, kind: str):
    for entry in block.get(kind, []) or []:
        if isinstance(entry, dict):
            (path, props), = entry.items()
            yield path, props or {}
        else:
            yield entry, {}


def _runs_the_model(block: dict) -> bool:
    """A stage that loads the base model (or its processor): it depends on ``model.name_or_path``."""
    return "${model.name_or_path}" in block.get("deps", [])


def test_metrics_and_plots_outs_are_not_cached_checkpoints_are():
    """Metrics and plots stay in git (`cache: false`), except in a stage that runs the model (see the next test)."""
    for name, stage in _stage_blocks().items():
        block = stage.get("do", stage)
        if _runs_the_model(block):
            continue
        for kind in ("metrics", "plots"):
            for path, props in _entries(block, kind):
                assert props.get("cache") is False, f"dvc.yaml stage {name}: {kind} {path} should be cache: false"
        for path, props in _entries(block, "outs"):
            if path.startswith("models/"):
                assert props.get("cache", True), f"dvc.yaml stage {name}: checkpoint {path} must be cached"


def test_a_stage_that_runs_the_model_has_every_output_cached():
    """DVC's run-cache restores a run in another clone only when the remote holds every one of its outputs, and
    `dvc push` never sends a `cache: false` one. So a stage that runs the model (training, scoring: the expensive
    ones) has none, and a run pushed with `dvc push --run-cache` is fetched instead of run again
    (test_a_colleague_fetches_a_seed_trained_elsewhere_instead_of_training_it)."""
    blocks = {name: stage.get("do", stage) for name, stage in _stage_blocks().items()}
    model_stages = {name: block for name, block in blocks.items() if _runs_the_model(block)}
    assert {"train", "predict"} <= set(model_stages), sorted(model_stages)
    for name, block in model_stages.items():
        for kind in ("outs", "metrics", "plots"):
            for path, props in _entries(block, kind):
                assert props.get("cache", True), (f"dvc.yaml stage {name}: {kind} {path} has cache: false, so a run "
                                                  "of it pushed with `dvc push --run-cache` cannot be restored "
                                                  "elsewhere; drop `cache: false`")


def test_no_stage_turns_the_run_cache_off():
    """`dvc repro` and `dvc exp run` save no run-cache entry for a stage when one of its outputs has `cache: false`
    and is not a metric or a plot, so there is nothing to restore later
    (test_going_back_to_an_earlier_configuration_restores_it_from_the_run_cache shows the cache at work)."""
    for name, stage in _stage_blocks().items():
        for path, props in _entries(stage.get("do", stage), "outs"):
            assert props.get("cache", True), (f"dvc.yaml stage {name}: out {path} has cache: false, so DVC saves no "
                                              "run-cache entry for the stage; cache it, or declare it as metrics/plots")


def test_per_seed_stages_use_per_seed_paths():
    for name, stage in _stage_blocks().items():
        if "foreach" not in stage or stage["foreach"] != "${seeds}":
            continue
        block = stage["do"]
        for kind in ("outs", "metrics", "plots"):
            for path, _ in _entries(block, kind):
                assert "${item}" in path, f"dvc.yaml stage {name}: {kind} {path} has no per-seed path"


def test_the_temporary_project_holds_every_code_dep_and_plot_template():
    """What init_project copies (project_files) holds each stage's script and library modules and every plot
    template dvc.yaml names, so `dvc repro` in the copy runs this checkout's code."""
    files = set(project_files())
    templates = set()
    for name, stage in _stage_blocks().items():
        block = stage.get("do", stage)
        for dep in block.get("deps", []):
            if dep.startswith(("stages/", "speech_calibration/")):
                assert dep in files, f"dvc.yaml stage {name}: code dep {dep} is not copied into the temporary project"
        templates |= {props["template"] for _, props in _entries(block, "plots") if "template" in props}
    for entry in yaml.safe_load((PROJECT / "dvc.yaml").read_text()).get("plots", []):
        templates |= {props["template"] for props in entry.values() if "template" in (props or {})}
    assert templates, "dvc.yaml names no plot template"
    for template in templates:
        assert f".dvc/plots/{template}.json" in files, template


def test_dvc_version_is_pinned_for_templated_top_level_sections():
    pyproject = (PROJECT / "pyproject.toml").read_text()
    assert re.search(r'"dvc>=3\.49,<4"', pyproject)
    import dvc

    major, minor = (int(x) for x in dvc.__version__.split(".")[:2])
    assert (major, minor) >= (3, 49)


def test_offline_page_template_has_no_cdn_and_the_placeholders_once():
    page = (PROJECT / ".dvc" / "plots" / "offline.html").read_text()
    assert page.count("{plot_divs}") == 1 and page.count("{refresh_tag}") == 1
    assert "{scripts}" not in page, "DVC would insert its CDN <script> tags there"
    assert "cdn.jsdelivr" not in page and "<script src" not in page
    for lib in ("vega", "vega-lite", "vega-embed"):
        assert f"/* {lib} */" in page
    config = (PROJECT / ".dvc" / "config").read_text()
    assert re.search(r"html_template\s*=\s*plots/offline\.html", config), "dvc config plots.html_template"


def test_reliability_template_fills_with_dvc_render():
    from dvc_render.vega import VegaRenderer
    from dvc_render.vega_templates import get_template

    template = get_template("reliability", str(PROJECT / ".dvc" / "plots"))
    rows = [{"rev": "workspace", "series": s, "kind": k, "confidence": c, "observed": o, "count": 3,
             "bin_lo": c - 0.03, "bin_hi": c + 0.03}
            for s in ("uncalibrated", "calibrated") for k in ("predicted", "SPEECH")
            for c, o in ((0.55, 0.5), (0.75, 0.8), (0.95, 0.9))]
    spec = VegaRenderer(rows, "plots/test/seed_42_test_reliability.csv", template=template, x="confidence",
                        y="observed", x_label="confidence", y_label="observed").get_filled_template()
    text = json.dumps(spec)
    assert "<DVC_METRIC" not in text
    diagonal, series = spec["layer"]
    assert diagonal["mark"]["type"] == "rule"
    assert diagonal["data"]["values"][0]["from"] == spec["layer"][1]["encoding"]["x"]["scale"]["domain"][0]
    assert series["data"]["values"] == rows
    assert "confidence" in series["encoding"]["x"]["title"] and "observed" in series["encoding"]["y"]["title"]


# ---------------------------------------------------------------------------------------------
# the model registry and experiments through a remote
# ---------------------------------------------------------------------------------------------

def test_the_registry_names_the_default_seeds_adapters_and_calibrators():
    """dvc.yaml's artifacts cannot be generated from params: they must list exactly params.yaml's seeds."""
    artifacts = yaml.safe_load((PROJECT / "dvc.yaml").read_text())["artifacts"]
    seeds = yaml.safe_load((PROJECT / "params.yaml").read_text())["seeds"]
    assert {name: a["path"] for name, a in artifacts.items()} == {
        **{f"adapter-seed-{s}": layout.adapter_dir(s).as_posix() for s in seeds},
        **{f"calibrator-seed-{s}": layout.seed_files(s).calibrator.as_posix() for s in seeds}}
    assert {a["type"] for a in artifacts.values()} == {"model"}


@pytest.mark.slow
def test_artifacts_get_and_exp_push_pull_through_a_local_remote(work, tmp_path):
    """The README's sharing commands through a local DVC remote and a bare git remote: a colleague's clone pulls the
    baseline byte for byte with nothing to re-run; an experiment pushed with dvc exp push reaches it with dvc exp pull
    and applies with its exact results; a registered adapter comes back by name from the DVC remote into an empty
    folder (the repo's own cache deleted first)."""
    storage, origin = tmp_path / "dvc-storage", tmp_path / "origin.git"
    git("init", "-q", "--bare", str(origin), cwd=tmp_path)
    dvc("remote", "add", "-d", "storage", str(storage), cwd=work)
    git("add", ".dvc/config", cwd=work)
    git("commit", "-q", "-m", "DVC remote", cwd=work)
    git("remote", "add", "origin", str(origin), cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    dvc("push", cwd=work)

    before, shown = tree_digest(work, ROUND_TRIP), metrics_json(work)
    # an experiment that re-runs little (the learning curve and the summary): what is shared is the same for any
    dvc("exp", "run", "-n", "refs", "-S", "learning_curve.repeats=11", cwd=work)
    expected = json.loads((work / "metrics/summary.json").read_text())
    expected_curve = (work / "metrics/learning_curve.txt").read_text()
    assert "11 per size" in expected_curve, expected_curve[:300]
    dvc("exp", "push", "origin", "refs", cwd=work)
    git("checkout", "HEAD", "--", ".", cwd=work)
    dvc("checkout", cwd=work)  # back to the baseline

    git("tag", "-a", "adapter-seed-42@v1.0.0", "-m", "seed 42 adapter", cwd=work)
    git("push", "-q", "origin", "--tags", cwd=work)
    adapter = {p.name: p.read_bytes() for p in (work / "models/seed_42").iterdir()}
    shutil.rmtree(work / ".dvc" / "cache")
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    dvc("artifacts", "get", str(work), "adapter-seed-42", "-o", "adapter", cwd=fetched)
    assert {p.name: p.read_bytes() for p in (fetched / "adapter").iterdir()} == adapter
    assert "adapter_model.safetensors" in adapter and "adapter_config.json" in adapter

    colleague = tmp_path / "colleague"
    git("clone", "-q", "--branch", "main", str(origin), str(colleague), cwd=tmp_path)
    assert not (colleague / "models" / f"seed_{SHRINK['seeds'][0]}").exists()
    dvc("pull", cwd=colleague)  # the baseline, byte for byte, and nothing to re-run
    assert tree_digest(colleague, ROUND_TRIP) == before
    assert UP_TO_DATE in dvc("status", cwd=colleague).stdout and metrics_json(colleague) == shown
    assert "in sync" in dvc("status", "--cloud", cwd=colleague).stdout.lower()
    dvc("exp", "pull", "origin", "refs", cwd=colleague)
    dvc("exp", "apply", "refs", cwd=colleague)
    assert json.loads((colleague / "metrics/summary.json").read_text()) == expected
    assert (colleague / "metrics/learning_curve.txt").read_text() == expected_curve
    assert "repeats: 11" in (colleague / "params.yaml").read_text()
