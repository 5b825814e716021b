"""Scale-out over processes (``speech_calibration.model.distributed``), on the CPU with 2 gloo processes.

Both launches run in one project (the ``runs`` fixture); the 2 ranks are processes forked by
``torch.multiprocessing`` with the environment variables torchrun sets.

- sharded scoring: 2 ranks write the CSVs one process writes;
- data-parallel training: the first optimizer step of 2 ranks (each with its share of the global batch)
  leaves the adapter weights one process leaves after the same step on the whole batch.
"""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from unittest import mock

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from speech_calibration import layout
from speech_calibration import params as params_mod
from speech_calibration.model import distributed
from speech_calibration.model.scoring import Scorer, score_csvs
from speech_calibration.model.training import train
from tests.model_helpers import make_project


def test_one_process_is_the_single_context(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ranks, device = distributed.setup(torch.device("cpu"))
    assert ranks is distributed.SINGLE and device == torch.device("cpu")
    assert ranks.is_main and not ranks.enabled
    assert list(ranks.shard(range(5))) == [0, 1, 2, 3, 4]
    assert ranks.sum([2, 3]) == [2, 3]


def test_ranks_take_every_other_item_and_together_all_of_them():
    shares = [distributed.Context(rank, 3).shard(list(range(8))) for rank in range(3)]
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert distributed.Context(1, 2).shard([9]) == []  # an empty share: the rank still takes part


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sgd_instead_of_adamw():
    """AdamW's first step is ``lr * sign(gradient)`` whatever the gradient's size, which would hide a rank's share
    weighted wrongly; plain SGD's step is the gradient itself."""
    return mock.patch.object(torch.optim, "AdamW", torch.optim.SGD)


def _score_and_train(project: Path, out: Path) -> None:
    """What both launches run in ``project``: score dev and test with the base model, then train (one SGD step)."""
    old = os.getcwd()
    os.chdir(project)
    try:
        p = params_mod.load("params.yaml")
        score_csvs(p, Scorer(p, None), {"dev": layout.split_csv("dev"), "test": layout.split_csv("test")},
                   out / "predictions")
        with _sgd_instead_of_adamw():
            train(p, 42, out / "model", out / "live")
    finally:
        os.chdir(old)


def _rank(rank: int, world_size: int, port: int, project: str) -> None:
    """One rank, with the variables torchrun sets (torch.multiprocessing passes the rank first)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _score_and_train(Path(project), Path(project) / "two_processes")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model) -> Path:
    """A project scored and trained by one process (``one_process/``) and by 2 gloo ranks (``two_processes/``).

    Scoring in batches of 3: dev's 10 clips make 4 batches (2 per rank), test's 7 make 3 (2 and 1), the 2
    content-free inputs one (rank 1 scores nothing). Training: 9 clips in micro-batches of 4 and 3 of them per
    step, so one optimizer step of micro-batches 4, 4 and 1, whose shares over the ranks are 2+2, 2+2 and 1+0.
    """
    project = make_project(tmp_path_factory.mktemp("distributed"), tiny_model,
                           sizes=(("train", 9, 3), ("dev", 10, 2), ("test", 7, 2)),
                           overrides={"predict.batch_size": 3, "train.epochs": 1, "train.batch_size": 4,
                                      "train.grad_accum": 3, "train.max_grad_norm": 1e9, "lora.dropout": 0.0})
    _score_and_train(project, project / "one_process")
    # fork: the ranks start with this process's imports and warm caches (fresh interpreters from spawn took 18 s
    # more on a busy 2-core machine)
    torch.multiprocessing.start_processes(_rank, args=(2, _free_port(), str(project)), nprocs=2, start_method="fork")
    return project


@pytest.mark.slow
def test_two_processes_score_the_same_csvs_as_one(runs):
    names = ["dev.csv", "dev_content_free.csv", "test.csv", "test_content_free.csv"]
    written = runs / "two_processes/predictions"
    assert sorted(f.name for f in written.iterdir()) == names
    assert not [f for f in written.parent.iterdir() if f.name.startswith(".")]  # no rank left a temporary folder
    for name in names:
        one, two = pd.read_csv(runs / "one_process/predictions" / name), pd.read_csv(written / name)
        pd.testing.assert_frame_equal(two, one, check_exact=False, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_data_parallel_step_equals_one_process_on_the_whole_batch(runs):
    info = json.loads((runs / "one_process/model/train_info.json").read_text())
    assert info["steps"] == 1 and json.loads((runs / "two_processes/model/train_info.json").read_text())["processes"] == 2
    after_one = load_file(str(runs / "one_process/model/adapter_model.safetensors"))
    after_two = load_file(str(runs / "two_processes/model/adapter_model.safetensors"))
    assert after_two.keys() == after_one.keys()
    for key, weight in after_one.items():
        torch.testing.assert_close(after_two[key], weight, rtol=0, atol=1e-6)
    assert max(float(w.abs().max()) for k, w in after_one.items() if "lora_B" in k) > 1e-4  # lora_B starts at zero
    for curve in ("loss", "accuracy_epoch"):  # rank 0 logs the whole batch's figures
        one, two = (pd.read_csv(runs / f"{who}/live/plots/metrics/train/{curve}.tsv", sep="\t")
                    for who in ("one_process", "two_processes"))
        pd.testing.assert_series_equal(two[curve], one[curve], check_exact=False, rtol=1e-6)
