"""The data contract (speech_calibration/data/schema.py): valid metadata reads; every malformed one is rejected
with one line that names the file, the row and the fix."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speech_calibration.data import schema
from speech_calibration.data.study_tables import read_logits_table
from speech_calibration.errors import UserError

HEADER = "clip_id,audio_path,label,group_id,duration_s,snr_db,source"


@pytest.fixture
def corpus(tmp_path, make_audio):
    """A folder with four real clips (audio/a.wav ... d.wav) and a writer of metadata CSVs beside them."""
    for name in "abcd":
        make_audio(f"audio/{name}.wav")

    def write(lines: list[str], name: str = "train_metadata.csv", header: str = HEADER):
        path = tmp_path / name
        path.write_text("\n".join([header, *lines]) + "\n")
        return path

    return write


GOOD = ["c1,audio/a.wav,SPEECH,g1,0.5,10,synthetic:x", "c2,audio/b.wav,NONSPEECH,g1,0.5,,synthetic:x",
        "c3,audio/c.wav,SPEECH,g2,0.5,-5,synthetic:y", "c4,audio/d.wav,NONSPEECH,g2,,,"]


def rejected(path, *words: str, read=schema.read_metadata) -> str:
    """Read ``path`` (with ``read``), expect a one-line UserError naming the file and ``words``; return the message."""
    with pytest.raises(UserError) as err:
        read(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_valid_metadata_reads_with_resolved_audio(corpus, tmp_path):
    df = schema.read_metadata(corpus(GOOD))
    assert list(df[schema.CLIP_ID]) == ["c1", "c2", "c3", "c4"]
    assert df["audio_file"][0] == str(tmp_path / "audio" / "a.wav")
    assert np.isnan(df[schema.SNR_DB][1]) and df[schema.SNR_DB][2] == -5.0
    assert np.isnan(df[schema.DURATION_S][3])


def test_ids_stay_strings(corpus):
    lines = ["007,audio/a.wav,SPEECH,001,,,", "8,audio/b.wav,NONSPEECH,001,,,"]
    df = schema.read_metadata(corpus(lines))
    assert list(df[schema.CLIP_ID]) == ["007", "8"] and list(df[schema.GROUP_ID]) == ["001", "001"]


def test_absolute_audio_path(corpus, tmp_path):
    lines = [f"c1,{tmp_path / 'audio' / 'a.wav'},SPEECH,g1,,,", "c2,audio/b.wav,NONSPEECH,g1,,,"]
    df = schema.read_metadata(corpus(lines))
    assert df["audio_file"][0] == str(tmp_path / "audio" / "a.wav")


def test_only_required_columns(corpus):
    df = schema.read_metadata(corpus(["c1,audio/a.wav,SPEECH,g1", "c2,audio/b.wav,NONSPEECH,g1"],
                                     header="clip_id,audio_path,label,group_id"))
    assert len(df) == 2


def test_missing_column(corpus):
    path = corpus(["c1,audio/a.wav,g1", "c2,audio/b.wav,g1"], header="clip_id,audio_path,group_id")
    rejected(path, "header", "missing column(s) label", "must include")


def test_empty_required_cell(corpus):
    rejected(corpus([GOOD[0], "c2,audio/b.wav,NONSPEECH,,,,"]), "row 2", "empty group_id")


def test_duplicate_clip_id(corpus):
    rejected(corpus([GOOD[0], GOOD[1], "c1,audio/c.wav,SPEECH,g2,,,"]), "row 3", "duplicate clip_id 'c1'", "unique")


def test_unknown_label(corpus):
    rejected(corpus([GOOD[0], "c2,audio/b.wav,speech?,g1,,,"]), "row 2", "label 'speech?'", "SPEECH, NONSPEECH")


@pytest.mark.parametrize("label, meant", [("speech", " (here SPEECH)"), ("1", "")])
def test_a_label_in_the_wrong_spelling_says_what_to_write_and_how_many_rows(corpus, label, meant):
    """'speech' and '1' are refused, with what to write instead and how many rows need it."""
    lines = [f"c1,audio/a.wav,{label},g1,,,", "c2,audio/b.wav,NONSPEECH,g1,,,", f"c3,audio/c.wav,{label},g2,,,", GOOD[3]]
    message = rejected(corpus(lines), "row 1")
    assert message.endswith(f"row 1: label '{label}' is not one of SPEECH, NONSPEECH (2 of 4 rows are not); write "
                            f"SPEECH or NONSPEECH exactly, in capitals{meant}")


def test_duration_not_a_number(corpus):
    rejected(corpus([GOOD[0], "c2,audio/b.wav,NONSPEECH,g1,long,,"]), "row 2", "duration_s 'long' is not a number",
             "leave the cell empty for a missing value")


def test_snr_not_a_number_says_the_fix(corpus):
    rejected(corpus([GOOD[0], "c2,audio/b.wav,NONSPEECH,g1,,12 dB,"]), "row 2", "snr_db '12 dB' is not a number",
             "write a number, or leave the cell empty for a missing value")


def test_true_or_false_in_a_numeric_column_is_not_a_number(corpus):
    """pandas reads a column of True/False as booleans, which are numbers to it: here they are text, and refused."""
    rejected(corpus(["c1,audio/a.wav,SPEECH,g1,True,,", "c2,audio/b.wav,NONSPEECH,g1,False,,"]), "row 1",
             "duration_s 'True' is not a number")


@pytest.mark.parametrize("cell, column, cells, third", [
    ("inf", "snr_db", ",inf,", "c3,audio/c.wav,SPEECH,g2,0.5,-5,"),  # every cell a number to pandas: the numeric path
    ("-inf", "snr_db", ",-inf,", "c3,audio/c.wav,SPEECH,g2,0.5,-5,"),
    ("inf", "duration_s", "inf,,", "c3,audio/c.wav,SPEECH,g2,NA,-5,"),  # beside a missing-value spelling: the text path
])
def test_an_infinite_number_is_refused_naming_row_and_column(corpus, cell, column, cells, third):
    rejected(corpus([GOOD[0], f"c2,audio/b.wav,NONSPEECH,g1,{cells}", third]), "row 2",
             f"{column} '{cell}' is not a finite number", "leave the cell empty for a missing value")


@pytest.mark.parametrize("missing", ["NA", "nan", "NaN", "N/A", "NULL", "None", " NA "])
def test_missing_value_spellings_of_r_and_numpy_read_as_missing(corpus, missing):
    """R writes NA, numpy and pandas nan / NaN for a missing number (a NONSPEECH clip's SNR): read as an empty cell."""
    df = schema.read_metadata(corpus([f"c1,audio/a.wav,SPEECH,g1,{missing},7.5,",
                                      f"c2,audio/b.wav,NONSPEECH,g1,0.5,{missing},"]))
    assert np.isnan(df[schema.DURATION_S][0]) and df[schema.DURATION_S][1] == 0.5
    assert df[schema.SNR_DB][0] == 7.5 and np.isnan(df[schema.SNR_DB][1])


def test_missing_value_spellings_stay_text_in_id_columns(corpus):
    """A group (or clip) called NA is a name, not a missing value."""
    df = schema.read_metadata(corpus(["NA,audio/a.wav,SPEECH,NA,,,", "nan,audio/b.wav,NONSPEECH,NA,,,"]))
    assert list(df[schema.CLIP_ID]) == ["NA", "nan"] and list(df[schema.GROUP_ID]) == ["NA", "NA"]


@pytest.mark.parametrize("line, column, value", [
    ("c2,audio/b.wav,NONSPEECH,g1 ,,,", "group_id", "g1 "),
    ("c2,audio/b.wav,NONSPEECH,\tg1,,,", "group_id", "\tg1"),
    (" c2,audio/b.wav,NONSPEECH,g1,,,", "clip_id", " c2"),
])
def test_ids_with_leading_or_trailing_whitespace(corpus, line, column, value):
    rejected(corpus([GOOD[0], line]), "row 2", f"{column} '{value}'", "leading or trailing whitespace", "remove it")


@pytest.mark.parametrize("clip_id, words", [
    ("../../../escaped", ["contains '/'", "another folder", "replace them with _"]),
    ("spk1/c2", ["contains '/'"]),
    ("spk1\\c2", ["contains '\\'"]),
    (".hidden", ["starts with '.'", "parent folder"]),
    ("..", ["starts with '.'"]),
    ("c\tx", ["control character U+0009", "remove it"]),
    ("c\x07x", ["control character U+0007"]),
    ("x" * 151, ["151 bytes long in UTF-8, over the 150", "shorten it"]),
    ("\u00e9" * 76, ["152 bytes long in UTF-8"]),  # 76 characters, two bytes each
], ids=["parent_folders", "slash", "backslash", "leading_dot", "dot_dot", "tab", "bell", "151_bytes", "152_bytes"])
def test_a_clip_id_that_cannot_name_a_file_is_refused(corpus, clip_id, words):
    """Clip ids name the conditions stage's files: a '/' would write outside its folder, a long id fail to write."""
    message = rejected(corpus([GOOD[0], f'"{clip_id}",audio/b.wav,NONSPEECH,g1,,,']), "row 2: clip_id", *words)
    assert message.isprintable()  # a control character in the id is shown escaped: the error stays one line


def test_clip_ids_that_can_name_a_file_are_read(corpus):
    ids = ["x" * schema.MAX_CLIP_ID_BYTES, "\u00e9" * (schema.MAX_CLIP_ID_BYTES // 2), "a.b", "spk 1 c-2_\u65e5\u672c"]
    lines = [f"{cid},audio/{name}.wav,{label},g1,,," for cid, name, label in
             zip(ids, "abcd", ["SPEECH", "NONSPEECH", "SPEECH", "NONSPEECH"])]
    assert list(schema.read_metadata(corpus(lines))[schema.CLIP_ID]) == ids


def test_the_longest_clip_id_names_every_condition_variant(tmp_path, make_audio):
    """A clip id of MAX_CLIP_ID_BYTES renders every variant of the conditions stage (written through temporary names
    longer still), and with the widest suffix MAX_VARIANT_SUFFIX_BYTES allows, a file is still written; the variants'
    metadata reads back, its ids longer than a clip's by their suffix."""
    from speech_calibration import layout
    from speech_calibration import params as params_mod
    from speech_calibration.data import variants
    from speech_calibration.data.audio import write_audio
    from speech_calibration.fileio import write_csv

    longest = "\u00e9" * (schema.MAX_CLIP_ID_BYTES // 2)
    widest = longest + "x" * schema.MAX_VARIANT_SUFFIX_BYTES
    write_audio(tmp_path / "widest" / f"{widest}.wav", np.zeros(1600, np.float32))
    assert (tmp_path / "widest" / f"{widest}.wav").is_file()
    meta = pd.DataFrame([{schema.CLIP_ID: longest, schema.LABEL: schema.SPEECH, schema.GROUP_ID: "g1",
                          "audio_file": str(make_audio("clip.wav", seconds=1.2))}])
    cfg = params_mod.Conditions()
    frame = variants.render(meta, cfg, 16000, tmp_path / "conditions", 6.0)
    assert len(frame) == 1 + len(cfg.durations_ms) + len(cfg.snr_db) + len(cfg.t60_s) + len(cfg.band)
    write_csv(layout.conditions_csv(root=tmp_path / "conditions"), frame)
    read = schema.read_metadata(layout.conditions_csv(root=tmp_path / "conditions"), require_both_classes=False)
    assert len(read) == len(frame)
    assert max(len(cid.encode()) for cid in frame[schema.CLIP_ID]) > schema.MAX_CLIP_ID_BYTES


def test_group_ids_differing_only_in_case_in_one_file(corpus):
    rejected(corpus([GOOD[0], GOOD[1], "c3,audio/c.wav,SPEECH,G1,,,"]), "row 3", "group_id 'G1' differs only in case",
             "'g1' (row 1)", "spell each group one way")


def test_missing_audio(corpus):
    rejected(corpus([GOOD[0], "c2,audio/gone.wav,NONSPEECH,g1,,,"]), "row 2", "gone.wav", "not found")


def test_unreadable_audio(corpus, tmp_path):
    (tmp_path / "audio" / "broken.wav").write_bytes(b"RIFF not really")
    rejected(corpus([GOOD[0], "c2,audio/broken.wav,NONSPEECH,g1,,,"]), "row 2", "broken.wav", "cannot be decoded as audio")


def test_empty_audio(corpus, tmp_path):
    (tmp_path / "audio" / "empty.wav").write_bytes(b"")
    rejected(corpus(["c1,audio/empty.wav,SPEECH,g1,,,", GOOD[1]]), "row 1", "empty.wav", "cannot be decoded as audio")


def test_split_with_one_class(corpus):
    rejected(corpus([GOOD[0], GOOD[2]]), "only SPEECH", "both SPEECH and NONSPEECH", "move some groups")


def test_a_split_without_rows_says_so(corpus):
    message = rejected(corpus([]), "has no rows", "both SPEECH and NONSPEECH")
    assert "holds only" not in message


def test_predictions_without_rows_or_file_name_the_stage_to_run(tmp_path):
    header_only = tmp_path / "dev.csv"
    header_only.write_text(",".join(schema.PREDICTIONS_REQUIRED) + "\n")
    rejected(header_only, "no rows", "re-run", read=schema.read_predictions)
    rejected(tmp_path / "missing.csv", "file not found", "dvc repro", read=schema.read_predictions)


def test_one_class_allowed_when_asked(corpus):
    df = schema.read_metadata(corpus([GOOD[0], GOOD[2]]), require_both_classes=False)
    assert set(df[schema.LABEL]) == {schema.SPEECH}


def test_not_a_csv(tmp_path):
    path = tmp_path / "train_metadata.csv"
    path.write_bytes(b"")
    rejected(path, "not a readable CSV")


def test_missing_csv(tmp_path, monkeypatch):
    rejected(tmp_path / "nope.csv", "file not found")
    with pytest.raises(UserError) as err:
        schema.read_metadata(tmp_path / "nope.csv")
    assert "dvc repro" not in str(err.value)
    monkeypatch.chdir(tmp_path)  # a split CSV that is not there yet: prepare writes it
    with pytest.raises(UserError, match=r"train_metadata.csv: file not found; run `dvc repro prepare` first"):
        schema.read_metadata("data/processed/grouped_split/train_metadata.csv")


def test_group_in_two_splits(corpus, tmp_path):
    corpus(GOOD[:2], "train_metadata.csv")
    corpus(["d1,audio/c.wav,SPEECH,g9,,,", "d2,audio/d.wav,NONSPEECH,g9,,,"], "dev_metadata.csv")
    test = corpus(["t1,audio/c.wav,SPEECH,g3,,,", "t2,audio/d.wav,NONSPEECH,g1,,,"], "test_metadata.csv")
    with pytest.raises(UserError) as err:
        schema.read_splits(tmp_path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{test} row 2: group 'g1' is also in train")
    assert "move all its clips to one split" in message


@pytest.fixture
def three_splits(corpus, make_audio):
    """Valid train/dev/test CSVs (groups g0, g1, g2; two clips each, each on its own audio file); returns a
    writer ``write(split, lines)`` that replaces one split's rows."""
    def write(split: str, lines: list[str]):
        return corpus(lines, f"{split}_metadata.csv")

    for i, split in enumerate(("train", "dev", "test")):
        for c in (1, 2):
            make_audio(f"audio/{split}{c}.wav")
        write(split, [f"{split}1,audio/{split}1.wav,SPEECH,g{i},,,", f"{split}2,audio/{split}2.wav,NONSPEECH,g{i},,,"])
    return write


def split_error(root) -> str:
    """The one-line UserError of reading the splits under ``root``."""
    with pytest.raises(UserError) as err:
        schema.read_splits(root)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_read_splits_reads_all_three(three_splits, tmp_path):
    frames = schema.read_splits(tmp_path)
    assert {s: len(df) for s, df in frames.items()} == {"train": 2, "dev": 2, "test": 2}


def test_group_in_two_splits_spelled_in_another_case(three_splits, tmp_path):
    test = three_splits("test", ["test1,audio/test1.wav,SPEECH,g2,,,", "test2,audio/test2.wav,NONSPEECH,G0,,,"])
    message = split_error(tmp_path)
    assert message.startswith(f"{test} row 2: group 'G0' (spelled 'g0' there) is also in train")
    assert "move all its clips to one split" in message


def test_group_in_two_splits_with_a_trailing_space(three_splits, tmp_path):
    """'g0 ' in dev and 'g0' in train: refused at the padded id, before any comparison could miss it."""
    dev = three_splits("dev", ["dev1,audio/dev1.wav,SPEECH,g0 ,,,", "dev2,audio/dev2.wav,NONSPEECH,g0 ,,,"])
    assert split_error(tmp_path).startswith(f"{dev} row 1: group_id 'g0 ' has leading or trailing whitespace")


def test_clip_id_in_two_splits(three_splits, tmp_path):
    test = three_splits("test", ["test1,audio/test1.wav,SPEECH,g2,,,", "dev2,audio/test2.wav,NONSPEECH,g2,,,"])
    message = split_error(tmp_path)
    dev = tmp_path / "dev_metadata.csv"
    assert message.startswith(f"{test} row 2: clip_id 'dev2' is also in dev ({dev} row 2)")
    assert "unique across the splits" in message


def test_audio_file_in_two_splits_however_its_path_is_spelled(three_splits, tmp_path):
    """The same file as audio/train1.wav in train and as an absolute path through '..' in test."""
    spelled = tmp_path / "audio" / ".." / "audio" / "train1.wav"
    test = three_splits("test", ["test1,audio/test1.wav,SPEECH,g2,,,", f"test2,{spelled},NONSPEECH,g2,,,"])
    message = split_error(tmp_path)
    train = tmp_path / "train_metadata.csv"
    assert message.startswith(f"{test} row 2: audio file {tmp_path / 'audio' / 'train1.wav'} is also in train ({train} row 1)")
    assert "in one split only" in message


def test_label_to_int():
    np.testing.assert_array_equal(schema.label_to_int(pd.Series(["SPEECH", "NONSPEECH", "SPEECH"])), [1, 0, 1])


def test_content_free_logits_read_and_checked(tmp_path):
    path = tmp_path / "dev_content_free.csv"
    assert schema.read_content_free(path) is None  # absent: a system without content-free inputs
    path.write_text("input,logit_A,logit_B\nsilence,1.5,2.0\nnoise,0.5,-1.0\n")
    a, b = schema.read_content_free(path)
    np.testing.assert_array_equal(a, [1.5, 0.5])
    np.testing.assert_array_equal(b, [2.0, -1.0])
    for text, message in (("input,logit_A\nsilence,1\n", "missing column(s) logit_B"),
                          ("input,logit_A,logit_B\n", "no rows"),
                          ("input,logit_A,logit_B\nsilence,1,2\nnoise,inf,0\n",
                           "row 2: logit_A / logit_B is not a finite")):
        path.write_text(text)
        rejected(path, message, read=schema.read_content_free)


def test_study_logits_tables_read_leniently_and_checked(tmp_path):
    path = tmp_path / "seed_42_test.csv"
    path.write_text("clip_id,ground_truth_token,logit_A,logit_B\nc1,A,2.0,1.0\nc2,B,0.0,1.5\n")
    _, a, b, y = read_logits_table(path)
    np.testing.assert_array_equal(a - b, [1.0, -1.5])
    np.testing.assert_array_equal(y, [1, 0])
    path.write_text("clip_id,label,p_speech\nc1,SPEECH,0.5\nc2,nonspeech,0.25\n")  # a probability, a lower-case label
    _, a, b, y = read_logits_table(path)
    np.testing.assert_allclose(a - b, [0.0, np.log(1 / 3)])
    np.testing.assert_array_equal(y, [1, 0])
    for text, message, fix in (("clip_id,logit_A,logit_B\nc1,1,2\n", "no ground_truth_token (or label) column",
                                "the study's CSVs carry"),
                               ("ground_truth_token,logit_A,logit_B\nA,1,2\nC,1,2\n",
                                "row 2: ground_truth_token 'C' is not one of", "fix the cell"),
                               ("ground_truth_token,score\nA,1\n", "no logit_A and logit_B (or p_speech / prob_A) columns",
                                "add the scores"),
                               ("ground_truth_token,logit_A,logit_B\nA,1,x\n",
                                "row 1: logit_A / logit_B is not a finite number", "fix or drop the row"),
                               ("ground_truth_token,logit_A,logit_B\n", "no rows", "one row per clip")):
        path.write_text(text)
        rejected(path, message, fix, read=read_logits_table)
    rejected(tmp_path / "nope.csv", "file not found", read=read_logits_table)


PREDICTIONS_HEADER = ",".join(schema.PREDICTIONS_REQUIRED)


def _predictions(tmp_path, rows: list[str], name: str = "dev.csv"):
    """A predictions CSV of ``rows`` (clip_id,group_id,label,ground_truth_token,logit_A,logit_B)."""
    path = tmp_path / name
    path.write_text("\n".join([PREDICTIONS_HEADER, *rows]) + "\n")
    return path


def test_predictions_whose_label_and_token_disagree_are_refused(tmp_path):
    """The stages read ``label``, the study's scripts ``ground_truth_token``: a row where they disagree would give the
    two different temperatures from one file, so the first such row is named. Swapped answers (prompt.speech_answer
    B) are consistent, so they pass."""
    good = ["c1,g1,SPEECH,A,1,0", "c2,g1,NONSPEECH,B,0,1"]
    assert list(schema.read_predictions(_predictions(tmp_path, good))[schema.LABEL]) == ["SPEECH", "NONSPEECH"]
    message = rejected(_predictions(tmp_path, [*good, "c3,g2,SPEECH,B,1,0", "c4,g2,NONSPEECH,A,0,1"]),
                       "row 3: label SPEECH but ground_truth_token 'B', while row 1 (SPEECH too) has 'A'",
                       "must agree", "fix the row or re-run the stage", read=schema.read_predictions)
    assert "row 4" not in message
    swapped = ["c1,g1,SPEECH,B,1,0", "c2,g1,NONSPEECH,A,0,1"]
    assert list(schema.read_predictions(_predictions(tmp_path, swapped))[schema.GROUND_TRUTH_TOKEN]) == ["B", "A"]


def test_predictions_with_other_answer_tokens_need_one_token_per_label(tmp_path):
    """prompt.speech_answer / nonspeech_answer may be other words: each label then keeps one token, its own."""
    good = ["c1,g1,SPEECH,Yes,1,0", "c2,g1,NONSPEECH,No,0,1"]
    assert list(schema.read_predictions(_predictions(tmp_path, good))[schema.GROUND_TRUTH_TOKEN]) == ["Yes", "No"]
    rejected(_predictions(tmp_path, [*good, "c3,g2,SPEECH,No,1,0"]),
             "row 3: label SPEECH but ground_truth_token 'No', while row 1 (SPEECH too) has 'Yes'", "must agree",
             read=schema.read_predictions)
    rejected(_predictions(tmp_path, [good[0], "c2,g1,NONSPEECH,Yes,0,1"]),
             "row 2: label NONSPEECH but ground_truth_token 'Yes', while 'Yes' is the token of SPEECH (row 1)",
             read=schema.read_predictions)


def test_a_duplicate_clip_id_names_both_rows(tmp_path):
    rejected(_predictions(tmp_path, ["c1,g1,SPEECH,A,1,0", "c2,g1,NONSPEECH,B,0,1", "c1,g2,NONSPEECH,B,0,1"]),
             "row 3: duplicate clip_id 'c1' (also row 1)", "remove or rename one", read=schema.read_predictions)


def test_an_empty_file_says_what_to_do(tmp_path, monkeypatch):
    empty = tmp_path / "dev.csv"
    empty.write_bytes(b"")
    rejected(empty, "not a readable CSV (the file is empty); check the path, or re-run the stage that writes it",
             read=schema.read_predictions)
    rejected(empty, "not a readable CSV (the file is empty); check the path, or write it with the header "
             "clip_id,audio_path,label,group_id")
    rejected(empty, "re-run the predict stage", read=schema.read_content_free)
    monkeypatch.chdir(tmp_path)
    split = tmp_path / "data/processed/grouped_split/train_metadata.csv"
    split.parent.mkdir(parents=True)
    split.write_bytes(b"")
    with pytest.raises(UserError, match=r"train_metadata.csv: not a readable CSV \(the file is empty\); re-run `dvc "
                                        r"repro prepare`"):
        schema.read_metadata("data/processed/grouped_split/train_metadata.csv")


def test_study_tables_refuse_a_label_that_disagrees_with_its_token(tmp_path):
    """The study's scripts take the class from ground_truth_token; a label beside it (any case, or A/B) must agree."""
    path = tmp_path / "seed_42_dev.csv"
    path.write_text("clip_id,label,ground_truth_token,logit_A,logit_B\nc1,speech,A,2,1\nc2,NONSPEECH,b,0,1\n"
                    "c3,B,B,0,1\n")
    np.testing.assert_array_equal(read_logits_table(path)[3], [1, 0, 0])
    path.write_text("clip_id,label,ground_truth_token,logit_A,logit_B\nc1,SPEECH,A,2,1\nc2,SPEECH,B,0,1\n"
                    "c3,NONSPEECH,A,0,1\n")
    message = rejected(path, "row 2: label SPEECH but ground_truth_token B; the two must agree (A = SPEECH, "
                       "B = NONSPEECH, the study's answers)", "fix the row", "prompt.speech_answer",
                       read=read_logits_table)
    assert "row 3" not in message
    path.write_text("clip_id,label,ground_truth_token,logit_A,logit_B\nc1,SPEECH,A,2,1\nc2,speech?,B,0,1\n")
    rejected(path, "row 2: label 'speech?' is not one of A, B, SPEECH, NONSPEECH", read=read_logits_table)


def test_study_tables_refuse_a_duplicate_clip_id(tmp_path):
    path = tmp_path / "seed_42_dev.csv"
    path.write_text("clip_id,ground_truth_token,logit_A,logit_B\n007,A,2,1\n7,B,0,1\n")
    assert len(read_logits_table(path)[0]) == 2  # ids are text: 007 and 7 are two clips
    path.write_text("clip_id,ground_truth_token,logit_A,logit_B\nc1,A,2,1\nc2,B,0,1\nc3,A,1,0\nc2,B,0,1\n")
    rejected(path, "row 4: duplicate clip_id 'c2' (also row 2)", "remove or rename one", read=read_logits_table)


def test_study_tables_missing_or_empty_say_what_to_do(tmp_path):
    rejected(tmp_path / "nope.csv", "file not found; check the path", "scripts/evaluate_with_logits.py",
             read=read_logits_table)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    rejected(empty, "not a readable CSV (the file is empty); check the path, or write it again",
             "scripts/evaluate_with_logits.py", read=read_logits_table)
