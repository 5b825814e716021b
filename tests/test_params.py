"""``params.yaml`` is the one source of the study's settings.

The dataclass defaults of ``speech_calibration.params`` equal ``params.yaml``, so code that builds params
from a partial mapping (a test, a notebook) runs the study ``dvc repro`` runs; and the calibration
methods that ``params.yaml`` may name are exactly the registry's.
"""
from __future__ import annotations

import dataclasses
import re
import typing

import pytest
import yaml

from speech_calibration import params
from speech_calibration.calibration.calibrators import REGISTRY
from speech_calibration.calibration.methods import AUTO, FITTED, METHODS
from speech_calibration.errors import UserError
from tests.import_graph import ROOT


def differences(a, b, key: str = "") -> list[str]:
    """Dotted keys where two params trees differ, with both values."""
    if dataclasses.is_dataclass(a):
        return [d for f in dataclasses.fields(a)
                for d in differences(getattr(a, f.name), getattr(b, f.name), f"{key}.{f.name}".lstrip("."))]
    if isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
        return [d for k in a for d in differences(a[k], b[k], f"{key}.{k}")]
    return [] if a == b else [f"{key}: default {a!r}, params.yaml {b!r}"]


def test_dataclass_defaults_equal_params_yaml():
    assert differences(params.parse(params.Params, {}, ""), params.load(ROOT / "params.yaml")) == []


def test_a_changed_default_is_caught(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 3
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert differences(params.parse(params.Params, {}, ""), params.load(path)) == [
        "train.epochs: default 20, params.yaml 3"]


def test_params_yaml_sets_every_key():
    """Every key the loader knows is written out in params.yaml, so a reader sees the whole study there."""
    def keys(cls, prefix=""):
        out = []
        for f in dataclasses.fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            out += keys(tp, f"{prefix}{f.name}.") if dataclasses.is_dataclass(tp) else [prefix + f.name]
        return out

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def present(key: str) -> bool:
        node = raw
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    assert [k for k in keys(params.Params) if not present(k)] == []


def test_calibration_methods_are_the_registrys():
    assert tuple(REGISTRY) == FITTED
    assert set(METHODS) == set(FITTED) | {AUTO}
    assert set(typing.get_args(typing.get_type_hints(params.Calibration)["method"])) == set(METHODS)


def test_an_experiments_set_param_changes_one_line_of_params_yaml(tmp_path):
    """``dvc exp run -S key=value`` rewrites params.yaml through DVC's own override writer; it must change
    the one line of that key and keep every other line (comments and blank lines included)."""
    from dvc.utils.hydra import apply_overrides

    original = (ROOT / "params.yaml").read_text().splitlines()
    for override, line in [("calibration.method=platt", "  method: platt"), ("train.epochs=3", "  epochs: 3"),
                           ("evaluate.n_bootstrap=500", "  n_bootstrap: 500")]:
        path = tmp_path / "params.yaml"
        path.write_text((ROOT / "params.yaml").read_text())
        apply_overrides(str(path), [override])
        changed = [(a, b) for a, b in zip(original, path.read_text().splitlines()) if a != b]
        assert len(path.read_text().splitlines()) == len(original), override
        assert len(changed) == 1 and changed[0][1] == line, (override, changed)


@pytest.mark.parametrize("seeds,message", [([], "seeds: must list at least one seed"),
                                           ([1, 2, 1], "seeds: must not repeat a seed"),
                                           ([42, -1], r"seeds: \[-1\]: a seed is a non-negative integer")])
def test_bad_seeds_are_one_line_errors(seeds, message):
    """A negative seed would name a folder (seed_-1) that the layout does not read as a seed's."""
    with pytest.raises(UserError, match=message):
        params.parse(params.Params, {"seeds": seeds}, "")


def test_invalid_yaml_names_the_line_and_column(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seeds: [42, 123\nmodel: {}\n")
    with pytest.raises(UserError, match=r"params.yaml: not valid YAML at line 2, column 6 \(expected ',' or ']'"):
        params.load(bad)


def _load_error(path) -> str:
    """The one-line message ``params.load(path)`` fails with."""
    with pytest.raises(UserError) as err:
        params.load(path)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_a_folder_is_a_one_line_error(tmp_path):
    """``--params models`` named a folder: an IsADirectoryError traceback before."""
    assert _load_error(tmp_path).startswith(f"{tmp_path}: is a folder; pass the params YAML file")


def test_a_file_that_is_not_utf8_text_is_a_one_line_error(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"seeds: [1]\n\xff\xfe\x00")
    assert _load_error(path).startswith(f"{path}: not UTF-8 text (byte 0xff at offset 11)")


def test_an_unreadable_file_is_a_one_line_error(tmp_path, monkeypatch):
    """What a user without read permission gets (the tests may run as root, who reads any file)."""
    path = tmp_path / "params.yaml"
    path.write_text("seeds: [1]\n")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(path), "read_text", denied)
    assert _load_error(path).startswith(f"{path}: not readable (permission denied)")


@pytest.mark.parametrize("text", ["", "# all settings commented out\n\n  # seeds: [1]\n", "---\n"])
def test_an_empty_params_file_is_a_one_line_error(tmp_path, text):
    """A params file with nothing in it would silently run the code's defaults; it is almost always a mistake."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    message = _load_error(path)
    assert message.startswith(f"{path}: empty (no settings, only blanks or comments)")
    assert "git checkout params.yaml" in message


def test_a_top_level_that_is_not_a_mapping_is_a_one_line_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("[]\n")
    assert _load_error(path) == f"{path}: top level: expected a mapping, got []"


@pytest.mark.parametrize("text,line,key,first", [
    ("seeds: [1]\nevaluate:\n  n_bins: 10\n  n_bootstrap: 50\n  n_bins: 15\n", 5, "evaluate.n_bins", 3),
    ("seeds: [1]\ntrain:\n  epochs: 2\nseeds: [2]\n", 4, "seeds", 1),
    ("seeds: [1]\ndata:\n  presplit: {train: a.csv, 'train': b.csv}\n", 3, "data.presplit.train", 3),
])
def test_a_repeated_key_is_a_one_line_error(tmp_path, text, line, key, first):
    """PyYAML would keep the last value without a word; the error names the file, the line and the key's path."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    assert _load_error(path) == f"{path} line {line}: {key}: key repeated (first at line {first}); delete one of the two"


def test_a_merge_key_may_still_be_overridden():
    """``<<: *base`` then a key of base is an override, not a repeat; and the loader builds what safe_load builds."""
    text = "base: &b {n_bins: 10, n_bootstrap: 5}\nevaluate:\n  <<: *b\n  n_bins: 15\nwhen: 2024-01-01\nx: [*b, 1e3]\n"
    loaded = yaml.load(text, Loader=params._UniqueKeyLoader)
    assert loaded == yaml.safe_load(text) and loaded["evaluate"] == {"n_bins": 15, "n_bootstrap": 5}



CORPUS_OUTSIDE = r"lies outside data.corpus \(data/raw\), so DVC would not see it change and prepare would not re-run; " \
                 r"move it under data/raw, or point data.corpus at its folder$"


@pytest.mark.parametrize("data,key,path", [
    ({"source": "csv", "csv": {"path": "elsewhere/metadata.csv"}}, "data.csv.path", "elsewhere/metadata.csv"),
    ({"source": "csv", "csv": {"path": "data/raw2/metadata.csv"}}, "data.csv.path", "data/raw2/metadata.csv"),
    ({"source": "csv", "csv": {"path": "data/raw/../metadata.csv"}}, "data.csv.path", "data/raw/../metadata.csv"),
    ({"source": "presplit", "presplit": {"train": "data/raw/train.csv", "dev": "/srv/dev.csv", "test": "data/raw/test.csv"}},
     "data.presplit.dev", "/srv/dev.csv"),
])
def test_a_corpus_csv_outside_data_corpus_is_a_one_line_error(data, key, path):
    """DVC sees your corpus change only inside data.corpus (prepare's dep): a CSV elsewhere would leave a stale split."""
    with pytest.raises(UserError, match=f"^{re.escape(key)}: {re.escape(path)} {CORPUS_OUTSIDE}") as err:
        params.parse(params.Params, {"data": data}, "")
    assert "\n" not in str(err.value)


def test_a_corpus_csv_inside_data_corpus_is_accepted(tmp_path, monkeypatch):
    """Relative paths are relative to the current folder (the project root), so an absolute path there is inside too;
    and a corpus folder that links elsewhere accepts the CSV by its real path."""
    monkeypatch.chdir(tmp_path)
    for data in ({"source": "csv", "csv": {"path": "data/raw/metadata.csv"}},
                 {"source": "csv", "csv": {"path": "./data/raw/sub/../metadata.csv"}},
                 {"source": "csv", "csv": {"path": str(tmp_path / "data/raw/metadata.csv")}},
                 {"source": "csv", "corpus": "/srv/corpus/", "csv": {"path": "/srv/corpus/metadata.csv"}},
                 {"source": "presplit", "presplit": {s: f"data/raw/{s}.csv" for s in params.SPLITS}}):
        assert params.parse(params.Params, {"data": data}, "").data.source == data["source"]
    (tmp_path / "mounted").mkdir()
    (tmp_path / "corpus").symlink_to(tmp_path / "mounted")
    data = {"source": "csv", "corpus": "corpus", "csv": {"path": str(tmp_path / "mounted" / "metadata.csv")}}
    assert params.parse(params.Params, {"data": data}, "").data.in_corpus(data["csv"]["path"])


def test_the_synthetic_corpus_ignores_data_corpus():
    """The embedded corpus reads no CSV, so a leftover csv path elsewhere is no error (nor any data.corpus)."""
    data = {"source": "synthetic", "corpus": "/nowhere", "csv": {"path": "/srv/metadata.csv"},
            "presplit": {s: f"/srv/{s}.csv" for s in params.SPLITS}}
    assert params.parse(params.Params, {"data": data}, "").data.corpus == "/nowhere"
    with pytest.raises(UserError, match=r"^data.corpus: must name the folder of your corpus"):
        params.parse(params.Params, {"data": {"corpus": ""}}, "")
