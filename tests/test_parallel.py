"""speech_calibration.parallel: the forked map gives what a plain loop gives, in order, and raises what it raises.
(tests/test_conditions.py checks that the conditions report it runs writes the same files on one process or two.)"""
from __future__ import annotations

import os

import pytest

from speech_calibration.errors import UserError
from speech_calibration.parallel import available_cpus, map_forked


def _square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise UserError("item 3: not allowed")
    return x


def test_results_come_back_in_order_from_forked_workers():
    out = map_forked(_square_and_pid, list(range(20)), workers=2)
    assert [square for square, _ in out] == [x * x for x in range(20)]
    assert os.getpid() not in {pid for _, pid in out}  # computed in the workers, not here


def test_one_worker_or_one_item_runs_here():
    assert map_forked(_square_and_pid, [1, 2, 3], workers=1) == [(1, os.getpid()), (4, os.getpid()), (9, os.getpid())]
    assert map_forked(_square_and_pid, [5], workers=2) == [(25, os.getpid())]
    assert map_forked(_square_and_pid, [], workers=2) == []


def test_a_workers_exception_is_raised_here_with_its_message():
    with pytest.raises(UserError, match="item 3: not allowed"):
        map_forked(_fails_on_three, list(range(6)), workers=2)
    assert map_forked(_fails_on_three, [0, 1, 2], workers=2) == [0, 1, 2]  # usable again afterwards


def test_workers_must_be_positive():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        map_forked(_square_and_pid, [1, 2], workers=0)
    assert available_cpus() >= 1
