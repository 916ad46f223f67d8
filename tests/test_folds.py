"""Subject-independent folds: kfold, LOSO, subject draws, sample filters and the leak check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from smile_vlm.errors import ScanError
from smile_vlm.folds import (check_folds, eligible_subjects, fold_of, fold_subjects, make_cross_folds, make_folds,
                             read_folds, sample_filter, split_protocol, write_folds)
from smile_vlm.readers.names import subject_key

CLASSES = ["anger", "disgust", "fear", "happiness", "sadness", "surprise"]


def bu3dfe_like(n_subjects: int, levels=(1, 2, 3, 4)) -> pd.DataFrame:
    """One row per (subject, class, level), plus one neutral scan (level 0) per subject."""
    rows = []
    for s in range(n_subjects):
        subject = f"F{s:04d}"
        rows += [(subject, f"{subject}_{c}{level}", c, c, level) for c in CLASSES for level in levels]
        rows.append((subject, f"{subject}_NE00", "neutral", "neutral", 0))
    return pd.DataFrame(rows, columns=["subject", "sample_id", "label", "labels", "intensity"])


def test_kfold_partitions_subjects_and_never_shares_one():
    folds = make_folds(bu3dfe_like(60), {"folds": 10, "seed": 3})
    assert sorted(folds.columns) == sorted(["k", "repeat", "fold", "subject", "split"])
    tests = folds[folds["split"] == "test"]
    assert tests.groupby("fold").size().tolist() == [6] * 10  # 60 subjects -> 10 x 6
    assert sorted(tests["subject"]) == [f"F{s:04d}" for s in range(60)]  # each tested exactly once
    for fold, rows in folds.groupby("fold"):
        train, test = (set(rows.loc[rows["split"] == split, "subject"]) for split in ("train", "test"))
        assert not train & test and len(train) == 54
    assert folds["k"].tolist() == folds["fold"].tolist()  # one repetition: k == fold


def test_folds_are_seeded():
    table = bu3dfe_like(20)
    same = make_folds(table, {"folds": 5, "seed": 7})
    pd.testing.assert_frame_equal(same, make_folds(table, {"folds": 5, "seed": 7}))
    assert not same.equals(make_folds(table, {"folds": 5, "seed": 8}))


def test_loso_has_one_fold_per_subject():
    folds = make_folds(bu3dfe_like(5), {"split": "loso", "folds": 2})
    assert folds["fold"].nunique() == 5
    for fold, rows in folds.groupby("fold"):
        test = rows.loc[rows["split"] == "test", "subject"].tolist()
        assert test == [f"F{fold:04d}"]  # subjects sorted, fold i holds out subject i
        assert (rows["split"] == "train").sum() == 4


def test_fixed_subject_draw_is_shared_by_repetitions_and_random_draw_is_not():
    table = bu3dfe_like(30)
    fixed = make_folds(table, {"folds": 10, "repetitions": 3, "subjects": 12, "seed": 1})
    drawn = [set(fixed.loc[fixed["repeat"] == r, "subject"]) for r in range(3)]
    assert len(drawn[0]) == 12 and drawn[0] == drawn[1] == drawn[2]
    # the fold assignment is redrawn per repetition even with a fixed subject set
    test_sets = [frozenset(fixed.loc[(fixed["repeat"] == r) & (fixed["fold"] == 0) & (fixed["split"] == "test"), "subject"])
                 for r in range(3)]
    assert len(set(test_sets)) > 1
    assert fixed["k"].max() == 29  # 3 repetitions x 10 folds

    per_repeat = make_folds(table, {"folds": 4, "repetitions": 3, "subjects": 12, "seed": 1,
                                    "select": "random_per_repeat"})
    drawn = [frozenset(per_repeat.loc[per_repeat["repeat"] == r, "subject"]) for r in range(3)]
    assert all(len(d) == 12 for d in drawn) and len(set(drawn)) == 3


def test_require_all_classes_drops_incomplete_subjects():
    table = bu3dfe_like(5, levels=(4,))
    # subject F0001 lacks fear, F0003 lacks surprise: Bosphorus-style "all six E_ scans" rule
    table = table[~((table["subject"] == "F0001") & (table["label"] == "fear"))]
    table = table[~((table["subject"] == "F0003") & (table["label"] == "surprise"))]
    protocol = {"classes": CLASSES, "require_all_classes": True}
    assert eligible_subjects(table, protocol) == ["F0000", "F0002", "F0004"]
    assert eligible_subjects(table, {"classes": CLASSES}) == [f"F{s:04d}" for s in range(5)]


def test_sample_filter_keeps_class_set_and_levels():
    table = bu3dfe_like(2)
    keep = sample_filter(table, {"classes": CLASSES, "levels": [3, 4]})
    kept = table[keep]
    assert len(kept) == 2 * 6 * 2  # BU-3DFE Subset I: 6 classes x levels 3-4, no neutral
    assert set(kept["intensity"]) == {3, 4} and "neutral" not in set(kept["label"])
    with_neutral = sample_filter(table, {"classes": CLASSES + ["neutral"]})
    assert with_neutral.sum() == 2 * (6 * 4 + 1)


def test_sample_filter_with_integer_labels_and_multilabel():
    table = pd.DataFrame({"subject": ["a", "a", "b"], "label": [0, -1, 2]})
    assert sample_filter(table, {}, store_classes=["x", "y", "z"]).tolist() == [True, False, True]
    assert sample_filter(table, {"classes": ["z"]}, store_classes=["x", "y", "z"]).tolist() == [False, False, True]
    multi = pd.DataFrame({"subject": ["a", "b", "c"], "label": ["", "", ""],
                          "labels": ["negative|surprise", "", "others"]})
    assert sample_filter(multi, {"classes": ["negative", "positive"]}).tolist() == [True, False, False]


def test_check_folds_rejects_a_subject_in_train_and_test():
    folds = make_folds(bu3dfe_like(6), {"folds": 3})
    leaked = folds.copy()
    row = leaked[(leaked["fold"] == 0) & (leaked["split"] == "train")].index[0]
    subject = leaked.loc[row, "subject"]
    test_subject = leaked[(leaked["fold"] == 0) & (leaked["split"] == "test")]["subject"].iloc[0]
    leaked.loc[row, "subject"] = test_subject  # fold 0 now trains on a test subject
    with pytest.raises(ScanError, match=f"fold 0: subjects in train and test: \\['{test_subject}'\\]"):
        check_folds(leaked)
    assert subject != test_subject


def test_check_folds_rejects_a_subject_tested_twice():
    folds = make_folds(bu3dfe_like(6), {"folds": 3})
    twice = folds.copy()
    first_test = twice[(twice["fold"] == 0) & (twice["split"] == "test")]["subject"].iloc[0]
    twice.loc[(twice["fold"] == 1) & (twice["subject"] == first_test), "split"] = "test"
    with pytest.raises(ScanError, match="tested in 2 folds"):
        check_folds(twice)


def test_bad_protocols_raise():
    table = bu3dfe_like(4)
    with pytest.raises(ScanError, match="folds=1 over 4 subjects"):
        make_folds(table, {"folds": 1})
    with pytest.raises(ScanError, match="subjects=0"):
        make_folds(table, {"folds": 2, "subjects": 0})
    with pytest.raises(ScanError, match="unknown keys"):
        make_folds(table, {"fold": 2})


def test_preset_asking_for_more_subjects_than_exist_uses_all(caplog):
    table = bu3dfe_like(4)
    folds = make_folds(table, {"folds": 2, "subjects": 60})
    assert sorted(folds["subject"].unique()) == sorted(table["subject"].unique())
    assert "asks for 60 subjects but 4 are eligible" in caplog.text


def test_preset_asking_for_more_folds_than_subjects_tests_one_subject_per_fold(caplog):
    table = bu3dfe_like(4)
    folds = make_folds(table, {"folds": 10, "subjects": 60})
    tested = folds[folds.split == "test"].groupby("k")["subject"].apply(list)
    assert len(tested) == 4 and all(len(subjects) == 1 for subjects in tested)
    assert sorted(sum(tested, [])) == sorted(table["subject"].unique())
    assert "asks for 10 folds but 4 subjects are eligible" in caplog.text


def test_write_and_read_folds_round_trip(tmp_path, monkeypatch):
    import smile_vlm.store as store

    class Root:
        attrs = {"classes": CLASSES}

    table = bu3dfe_like(8, levels=(3, 4))
    monkeypatch.setattr(store, "open_store", lambda path: Root())
    monkeypatch.setattr(store, "store_table", lambda path: table)
    out = tmp_path / "folds.csv"
    written = write_folds("unused.zarr", {"folds": 4, "repetitions": 2, "seed": 5, "classes": CLASSES}, out)
    read = read_folds(out)
    pd.testing.assert_frame_equal(read, written, check_dtype=False)
    assert fold_of(read, 6) == (1, 2)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left no temp file
    np.testing.assert_array_equal(read["k"].unique(), np.arange(8))


BP4D_CLASSES = ["happiness", "sadness", "surprise", "embarrassment", "fear", "pain", "anger", "disgust"]


def bp4d_like(subjects: dict[str, list[str]]) -> pd.DataFrame:
    """One sequence per (subject, task class); subject names chosen to collide with BU-4DFE's."""
    rows = [(subject, f"{subject}_{c}", c, c, -1) for subject, names in subjects.items() for c in names]
    return pd.DataFrame(rows, columns=["subject", "sample_id", "label", "labels", "intensity"])


def cross(train_table, test_table, **protocol):
    protocol = {"split": "cross", "classes": ["happiness", "disgust"], **protocol}
    return make_cross_folds(train_table, test_table, protocol, CLASSES, BP4D_CLASSES, "bu4dfe", "bp4d")


def test_cross_fold_trains_on_every_training_subject_and_tests_the_other_dataset():
    train_table = bu3dfe_like(3, levels=(0,))  # F0000..F0002
    # F0000 collides with a BU-4DFE name; F0009 has only T2 (sadness): not a test subject
    test_table = bp4d_like({"F0000": ["happiness", "disgust", "pain"], "F0005": ["happiness"], "F0009": ["sadness"]})
    folds = cross(train_table, test_table)
    assert folds.columns.tolist() == ["k", "repeat", "fold", "subject", "split", "dataset"]
    assert set(folds["k"]) == {0} and set(folds["fold"]) == {0}
    train = folds[folds["split"] == "train"]
    test = folds[folds["split"] == "test"]
    assert train["subject"].tolist() == ["F0000", "F0001", "F0002"] and set(train["dataset"]) == {"bu4dfe"}
    assert test["subject"].tolist() == ["F0000", "F0005"] and set(test["dataset"]) == {"bp4d"}
    # the same name in two datasets is two people: the table passes the leak check
    check_folds(folds)
    assert fold_subjects(folds, 0, 0, "bp4d") == {"train": [], "test": ["F0000", "F0005"]}
    assert fold_subjects(folds, 0, 0, "bu4dfe") == {"train": ["F0000", "F0001", "F0002"], "test": []}


def test_cross_leak_check_compares_dataset_and_subject():
    folds = cross(bu3dfe_like(2, levels=(0,)), bp4d_like({"F0000": ["happiness"]}))
    leaked = folds.copy()
    leaked.loc[leaked["split"] == "test", "dataset"] = "bu4dfe"  # BU-4DFE's F0000 now tested too
    with pytest.raises(ScanError, match=r"subjects in train and test: \['bu4dfe/F0000'\]"):
        check_folds(leaked)


def test_cross_sample_filters_and_bad_cross_protocols():
    train_protocol = split_protocol({"split": "cross", "classes": ["happiness", "disgust"], "levels": [3, 4]}, "train")
    test_protocol = split_protocol({"split": "cross", "classes": ["happiness", "disgust"], "levels": [3, 4]}, "test")
    train_table = bu3dfe_like(1)
    # training keeps all six classes at levels 3-4; the test side keeps the two classes, any level
    assert sample_filter(train_table, train_protocol, CLASSES).sum() == 6 * 2
    test_table = bp4d_like({"F0000": ["happiness", "disgust", "pain"]})
    assert sample_filter(test_table, test_protocol, BP4D_CLASSES).tolist() == [True, True, False]

    train_table, test_table = bu3dfe_like(2, levels=(0,)), bp4d_like({"F0000": ["happiness"]})
    with pytest.raises(ScanError, match="needs the experiment's classes"):
        cross(train_table, test_table, classes=None)
    with pytest.raises(ScanError, match=r"classes \['disgust'\] are tested but not trained"):
        cross(train_table, test_table, train_classes=["happiness", "sadness"])
    with pytest.raises(ScanError, match=r"classes \['pain'\] are tested but not trained"):
        cross(train_table, test_table, classes=["happiness", "pain"])
    with pytest.raises(ScanError, match="subjects must be 'all'"):
        cross(train_table, test_table, subjects=1)
    with pytest.raises(ScanError, match="no test subject of bp4d"):
        cross(train_table, bp4d_like({"F0000": ["pain"]}))
    with pytest.raises(ScanError, match="needs the training store"):
        make_folds(train_table, {"split": "cross", "classes": ["happiness"]})
    with pytest.raises(ScanError, match="predict_classes must be one of"):
        cross(train_table, test_table, predict_classes="all")


# ----------------------------------------------------------------------------- one identity per person


@pytest.mark.parametrize("train_name, test_name", [("S01", "s01"), ("A", "A "), ("Ｓ01", "S01"),
                                                   ("A", "\u0410"), ("F01", "F0l"), ("bs\u03bf01", "bso01")])
def test_leak_check_compares_folded_identities(train_name, test_name):
    # Two spellings of one person, one in train and one in test of the same fold, is a leak.
    folds = pd.DataFrame(
        [(0, 0, 0, train_name, "train"), (0, 0, 0, "B", "train"), (0, 0, 0, test_name, "test")],
        columns=["k", "repeat", "fold", "subject", "split"],
    )
    with pytest.raises(ScanError, match="subjects in train and test") as info:
        check_folds(folds)
    assert repr(train_name)[1:-1] in str(info.value) and repr(test_name)[1:-1] in str(info.value)
    check_folds(folds.replace({test_name: "C"}))  # a different person passes


def test_confusable_skeleton_keeps_different_people_apart():
    # the skeleton folds look-alikes only: real subject names of the datasets stay distinct
    names = ["F0001", "F0010", "M0001", "F001", "M001", "bs000", "bs001", "bs010", "bs100", "S01", "S02", "s10"]
    assert len({subject_key(n) for n in names}) == len({n.casefold() for n in names})
    assert subject_key("\u0410") == subject_key("a") and subject_key("rn") != subject_key("m")


def test_make_folds_refuses_two_spellings_of_one_subject():
    table = bu3dfe_like(4)
    table.loc[table["sample_id"].str.endswith("_NE00") & (table["subject"] == "F0001"), "subject"] = "f0001"
    with pytest.raises(ScanError, match="'F0001' and 'f0001' are one identity"):
        make_folds(table, {"folds": 2})


def test_write_folds_logs_subjects_per_fold(tmp_path, caplog, monkeypatch):
    import smile_vlm.store as store

    table = bu3dfe_like(4)

    class Root:
        attrs = {"classes": CLASSES + ["neutral"], "dataset": "bu3dfe"}

    monkeypatch.setattr(store, "open_store", lambda path: Root())
    monkeypatch.setattr(store, "store_table", lambda path: table)
    with caplog.at_level("INFO", logger="smile_vlm.folds"):
        folds = write_folds("store", {"folds": 2}, tmp_path / "folds.csv")
    lines = [r.getMessage() for r in caplog.records if r.name == "smile_vlm.folds"]
    assert lines[0] == "2 folds over 4 subjects"
    for k in (0, 1):
        test = sorted(folds.loc[(folds["k"] == k) & (folds["split"] == "test"), "subject"])
        assert lines[1 + k] == f"k={k} (repeat 0, fold {k}): 2 train, 2 test subjects: {', '.join(test)}"
