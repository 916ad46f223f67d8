"""Subject-independent folds (docs/datasets.md): no subject is ever in train and test of one fold.

A protocol is plain data, so every published setting is a parameter set rather than a preset:

    folds: 10               number of folds per repetition (ignored for split "loso")
    repetitions: 1          how many times the fold assignment is redrawn
    seed: 0                 seeds the subject draw and the fold assignment
    split: "kfold"          "kfold" or "loso" (leave one subject out: one fold per subject)
    subjects: "all"         or an int N: a seeded random draw of N eligible subjects
    select: "fixed"         "fixed": one draw for all repetitions (BU-3DFE P1);
                            "random_per_repeat": a new draw per repetition (BU-3DFE P2, Bosphorus)
    require_all_classes: false   keep only subjects that have every class (Bosphorus 65 of 105)
    levels: null            BU-3DFE intensity levels to keep, e.g. [3, 4]; null keeps all
    classes: null           the class set, in class-index order; null = the store's classes
    train_classes: null     split "cross" only: the classes trained on; null = the training store's
    predict_classes: "experiment"   split "cross" only: the zero-shot decision on the test store is
                            over ``classes`` ("experiment") or over every trained class ("train")

The folds table has one row per (repeat, fold, subject): ``split`` is "train" or "test"; ``k``
numbers the (repeat, fold) pairs 0, 1, ... so one integer names a training job.
Subjects outside the draw do not appear. The sample filter (classes, levels) is applied again by
train and evaluate through ``fold_samples``, so they see exactly the samples the folds were made for.

Cross-dataset protocol (split "cross", docs/datasets.md: train on BU-4DFE, test on BP4D T1/T8):
one fold, k = 0, trains on every eligible subject of a training store and tests on every eligible
subject of the evaluated store. Such a table has a ``dataset`` column (the stores' ``dataset``
attribute), and a subject is the pair (dataset, subject) everywhere: the leak check compares pairs,
and ``fold_samples`` takes from a store only the rows of its own dataset. Training keeps the
training store's samples of ``train_classes``; the test store keeps the samples of ``classes``
(the experiment's classes, which must be trained classes too). ``levels`` filters the training
store only (BP4D has no intensity levels). ``folds``, ``select`` and ``seed`` play no part;
``subjects`` must be "all" and ``repetitions`` 1, since a cross fold has nothing to draw.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from smile_vlm import atomic
from smile_vlm.errors import ScanError
from smile_vlm.readers.names import subject_key
from smile_vlm.settings import DEFAULT_PROTOCOL

FOLD_COLUMNS = ["k", "repeat", "fold", "subject", "split"]
# Present in cross-dataset folds only: which store a row's subject belongs to.
DATASET_COLUMN = "dataset"
PREDICT_CLASSES = ("experiment", "train")


# Seed-sequence tags keep the subject draw and the fold shuffle independent streams.
_DRAW_STREAM = 1
_SHUFFLE_STREAM = 2

log = logging.getLogger(__name__)


def resolve_protocol(protocol: dict | None) -> dict:
    unknown = set(protocol or {}) - set(DEFAULT_PROTOCOL)
    if unknown:
        raise ScanError("protocol", f"unknown keys {sorted(unknown)}")
    resolved = {**DEFAULT_PROTOCOL, **(protocol or {})}
    if resolved["predict_classes"] not in PREDICT_CLASSES:
        raise ScanError("protocol", f"predict_classes must be one of {list(PREDICT_CLASSES)}, "
                                    f"not {resolved['predict_classes']!r}")
    return resolved


def is_cross(protocol: dict | None) -> bool:
    return resolve_protocol(protocol)["split"] == "cross"


def split_protocol(protocol: dict | None, split: str) -> dict:
    """The sample-filter protocol of one split ("train" or "test").

    Within one dataset both splits use the protocol itself. Across datasets the training store
    keeps ``train_classes`` (null: all its classes) and the ``levels``; the test store keeps the
    experiment's ``classes`` with no level filter.
    """
    protocol = resolve_protocol(protocol)
    if protocol["split"] != "cross":
        return protocol
    if split == "train":
        return {**protocol, "classes": protocol["train_classes"]}
    return {**protocol, "levels": None}


def sample_labels(table: pd.DataFrame, store_classes: list[str] | None = None) -> list[set[str]]:
    """The class names of each sample: one for single-label rows, several for multi-label (4DME).

    ``label`` may hold class names or class indices into ``store_classes`` (-1 or '' = none);
    a pipe-joined ``labels`` column (the manifest's multi-label form) is used when present.
    """
    if "labels" in table.columns and table["labels"].map(lambda v: isinstance(v, str)).all():
        return [{name for name in value.split("|") if name} for value in table["labels"]]
    names = []
    for value in table["label"]:
        if isinstance(value, str):
            names.append({value} if value else set())
        elif int(value) < 0:
            names.append(set())
        elif store_classes is None:
            raise ScanError("store", "integer labels need the store's class list")
        else:
            names.append({store_classes[int(value)]})
    return names


def sample_filter(table: pd.DataFrame, protocol: dict | None, store_classes: list[str] | None = None) -> np.ndarray:
    """Boolean mask of usable samples: a class in the protocol's class set, an allowed level."""
    protocol = resolve_protocol(protocol)
    classes = protocol["classes"] or store_classes
    labels = sample_labels(table, store_classes)
    keep = np.array([bool(names) and (classes is None or bool(names & set(classes))) for names in labels])
    if protocol["levels"] is not None:
        if "intensity" not in table.columns:
            raise ScanError("store", "protocol sets levels but the table has no intensity column")
        keep &= table["intensity"].isin([int(level) for level in protocol["levels"]]).to_numpy()
    return keep


def eligible_subjects(table: pd.DataFrame, protocol: dict, store_classes: list[str] | None = None) -> list[str]:
    """Sorted subjects with usable samples (and every class, when the protocol requires it)."""
    protocol = resolve_protocol(protocol)
    keep = sample_filter(table, protocol, store_classes)
    usable = table.loc[keep]
    labels = [names for names, kept in zip(sample_labels(table, store_classes), keep) if kept]
    if not protocol["require_all_classes"]:
        return sorted(usable["subject"].astype(str).unique())
    classes = set(protocol["classes"] or store_classes or set().union(*labels))
    seen: dict[str, set[str]] = {}
    for subject, names in zip(usable["subject"].astype(str), labels):
        seen.setdefault(subject, set()).update(names)
    return sorted(subject for subject, names in seen.items() if classes <= names)


def make_folds(subjects_table: pd.DataFrame, protocol: dict | None, store_classes: list[str] | None = None) -> pd.DataFrame:
    """Assign subjects to folds: DataFrame(repeat, fold, subject, split), already checked."""
    protocol = resolve_protocol(protocol)
    if protocol["split"] == "cross":
        raise ScanError("protocol", "split 'cross' needs the training store too: "
                                    "make_cross_folds, or write_folds(..., train_store=...)")
    check_spellings(subjects_table["subject"], "store")
    pool = eligible_subjects(subjects_table, protocol, store_classes)
    if not pool:
        raise ScanError("protocol", "no subject has usable samples under this protocol")
    if protocol["select"] not in ("fixed", "random_per_repeat"):
        raise ScanError("protocol", f"select must be 'fixed' or 'random_per_repeat', not {protocol['select']!r}")
    seed = int(protocol["seed"])
    rows, k = [], 0
    for repeat in range(int(protocol["repetitions"])):
        draw_key = repeat if protocol["select"] == "random_per_repeat" else 0
        subjects = _draw_subjects(pool, protocol["subjects"], np.random.default_rng([seed, _DRAW_STREAM, draw_key]))
        groups = _split_groups(subjects, protocol, np.random.default_rng([seed, _SHUFFLE_STREAM, repeat]))
        for fold, test in enumerate(groups):
            test_set = set(test)
            rows += [(k, repeat, fold, subject, "test" if subject in test_set else "train") for subject in subjects]
            k += 1
    folds = pd.DataFrame(rows, columns=FOLD_COLUMNS)
    check_folds(folds)
    return folds


def make_cross_folds(train_table: pd.DataFrame, test_table: pd.DataFrame, protocol: dict | None,
                     train_store_classes: list[str], test_store_classes: list[str],
                     train_dataset: str, test_dataset: str) -> pd.DataFrame:
    """The single cross-dataset fold: every eligible training-store subject trains, every eligible
    test-store subject is tested. Columns FOLD_COLUMNS + ``dataset``; already checked."""
    protocol = resolve_protocol(protocol)
    if protocol["split"] != "cross":
        raise ScanError("protocol", f"make_cross_folds needs split 'cross', not {protocol['split']!r}")
    if protocol["subjects"] not in (None, "all") or int(protocol["repetitions"]) != 1:
        raise ScanError("protocol", "split 'cross' uses all subjects once: subjects must be 'all', repetitions 1")
    check_spellings(train_table["subject"], "training store")
    check_spellings(test_table["subject"], "test store")
    train_classes, test_classes = cross_classes(protocol, train_store_classes)
    for name, wanted, available in (("train_classes", train_classes, train_store_classes),
                                    ("classes", test_classes, test_store_classes)):
        unknown = set(wanted) - set(available)
        if unknown:
            raise ScanError("protocol", f"{name} {sorted(unknown)} are not classes of the "
                                        f"{'training' if name == 'train_classes' else 'test'} store")
    splits = {
        split: (dataset, eligible_subjects(table, split_protocol(protocol, split), store_classes))
        for split, dataset, table, store_classes in (("train", train_dataset, train_table, train_store_classes),
                                                      ("test", test_dataset, test_table, test_store_classes))
    }
    for split, (dataset, subjects) in splits.items():
        if not subjects:
            raise ScanError("protocol", f"no {split} subject of {dataset} has usable samples under this protocol")
    rows = [(0, 0, 0, subject, split, dataset) for split, (dataset, subjects) in splits.items() for subject in subjects]
    folds = pd.DataFrame(rows, columns=FOLD_COLUMNS + [DATASET_COLUMN])
    check_folds(folds)
    return folds


def cross_classes(protocol: dict | None, train_store_classes: list[str]) -> tuple[list[str], list[str]]:
    """(trained classes, experiment classes) of a cross protocol; the latter must be among the former."""
    protocol = resolve_protocol(protocol)
    if not protocol["classes"]:
        raise ScanError("protocol", "split 'cross' needs the experiment's classes (e.g. [happiness, disgust])")
    train_classes = list(protocol["train_classes"] or train_store_classes)
    test_classes = list(protocol["classes"])
    untrained = [name for name in test_classes if name not in train_classes]
    if untrained:
        raise ScanError("protocol", f"classes {untrained} are tested but not trained (train_classes {train_classes})")
    return train_classes, test_classes


def _draw_subjects(pool: list[str], count, rng: np.random.Generator) -> list[str]:
    if count in (None, "all"):
        return list(pool)
    count = int(count)
    if count <= 0:
        raise ScanError("protocol", f"subjects={count}: must be positive or 'all'")
    if count > len(pool):
        # A paper preset (e.g. 60 BU-3DFE subjects) on a smaller dataset (the synthetic default)
        # uses every eligible subject; folds.csv records which ones.
        log.warning("protocol asks for %d subjects but %d are eligible: using all of them", count, len(pool))
        return list(pool)
    return sorted(rng.choice(pool, size=count, replace=False).tolist())


def _split_groups(subjects: list[str], protocol: dict, rng: np.random.Generator) -> list[list[str]]:
    if protocol["split"] == "loso":
        return [[subject] for subject in subjects]
    if protocol["split"] != "kfold":
        raise ScanError("protocol", f"split must be 'kfold' or 'loso', not {protocol['split']!r}")
    n_folds = int(protocol["folds"])
    if n_folds < 2 or len(subjects) < 2:
        raise ScanError("protocol", f"folds={n_folds} over {len(subjects)} subjects: k-fold needs at least 2 of each")
    if n_folds > len(subjects):
        # As with the subject count: a paper preset on a smaller dataset (a scaled-down synthetic
        # default) becomes one subject per fold instead of failing; folds.csv records it.
        log.warning("protocol asks for %d folds but %d subjects are eligible: one subject per fold",
                    n_folds, len(subjects))
        n_folds = len(subjects)
    order = rng.permutation(len(subjects))
    # array_split keeps fold sizes within one subject of each other (60 subjects -> 10 x 6).
    return [[subjects[i] for i in part] for part in np.array_split(order, n_folds)]


def check_folds(folds: pd.DataFrame, source: str | Path = "folds") -> None:
    """Raise ScanError unless every fold is subject-independent and each subject is tested once."""
    missing = set(FOLD_COLUMNS) - set(folds.columns)
    if missing:
        raise ScanError(source, f"missing columns {sorted(missing)}")
    bad_split = set(folds["split"]) - {"train", "test"}
    if bad_split:
        raise ScanError(source, f"split values must be train/test, found {sorted(bad_split)}")
    if (folds.groupby(["repeat", "fold"])["k"].nunique() != 1).any() or \
            (folds.groupby("k")[["repeat", "fold"]].nunique() != 1).any(axis=None):
        raise ScanError(source, "k does not name exactly one (repeat, fold) pair")
    # A person is the folded name (names.subject_key), so 'S01'/'s01' or 'A'/'A ' on both sides
    # is a leak. Across datasets a subject is (dataset, subject): BU-4DFE's F001 is not BP4D's
    # F001, but the same dataset on both sides (two renders of one store) is the same person.
    raw = folds["subject"].astype(str)
    identity = raw.map(subject_key)
    if DATASET_COLUMN in folds.columns:
        raw = folds[DATASET_COLUMN].astype(str) + "/" + raw
        identity = folds[DATASET_COLUMN].astype(str) + "/" + identity
    folds = folds.assign(subject=identity, raw=raw)
    for (repeat, fold), rows in folds.groupby(["repeat", "fold"], sort=True):
        train = set(rows.loc[rows["split"] == "train", "subject"])
        test = set(rows.loc[rows["split"] == "test", "subject"])
        shared = train & test
        if shared:
            # name the raw spellings: 'S01' in train and 's01' in test is one person
            spelled = sorted({" = ".join(sorted(set(rows.loc[rows["subject"] == key, "raw"]))) for key in shared})
            raise ScanError(source, f"repeat {repeat} fold {fold}: subjects in train and test: {spelled}")
        if not test or not train:
            raise ScanError(source, f"repeat {repeat} fold {fold}: empty train or test split")
    tested = folds.loc[folds["split"] == "test"].groupby(["repeat", "subject"]).size()
    twice = tested[tested > 1]
    if len(twice):
        (repeat, subject), _ = next(iter(twice.items()))
        raise ScanError(source, f"repeat {repeat}: subject {subject} is tested in {twice.iloc[0]} folds")


def check_spellings(subjects, source: str | Path) -> None:
    """Raise ScanError when two spellings of one identity appear (the index refuses them too)."""
    spellings: dict[str, set[str]] = {}
    for subject in pd.Series(subjects).astype(str).unique():
        spellings.setdefault(subject_key(subject), set()).add(subject)
    clashes = sorted(sorted(group) for group in spellings.values() if len(group) > 1)
    if clashes:
        raise ScanError(source, "subjects " + "; ".join(" and ".join(map(repr, g)) for g in clashes)
                        + " are one identity after Unicode NFKC, strip, casefold and confusable skeleton")


def log_folds(folds: pd.DataFrame) -> None:
    """One log line per fold: its train and test subject counts and the test subjects."""
    dataset = folds[DATASET_COLUMN].astype(str) + "/" if DATASET_COLUMN in folds.columns else ""
    folds = folds.assign(who=dataset + folds["subject"].astype(str))
    log.info("%d folds over %d subjects", folds["k"].nunique(), folds["who"].nunique())
    for (k, repeat, fold), rows in folds.groupby(["k", "repeat", "fold"], sort=True):
        test = sorted(rows.loc[rows["split"] == "test", "who"])
        n_train = int((rows["split"] == "train").sum())
        log.info("k=%d (repeat %d, fold %d): %d train, %d test subjects: %s",
                 k, repeat, fold, n_train, len(test), ", ".join(test))


def write_folds(store_path: str | Path, protocol: dict | None, out_csv: str | Path,
                train_store: str | Path | None = None) -> pd.DataFrame:
    """Make the folds of a packed store and write them atomically as CSV.

    ``store_path`` is the evaluated store. Split "cross" also needs ``train_store``, the store the
    model trains on; any other split trains on ``store_path`` and refuses a different train_store.
    """
    from smile_vlm.store import open_store, store_table

    root = open_store(store_path)
    store_classes = list(root.attrs["classes"])
    if is_cross(protocol):
        if train_store is None:
            raise ScanError("protocol", "split 'cross' needs train_store (the store the model trains on)")
        train_root = open_store(train_store)
        folds = make_cross_folds(store_table(train_store), store_table(store_path), protocol,
                                 list(train_root.attrs["classes"]), store_classes,
                                 str(train_root.attrs["dataset"]), str(root.attrs["dataset"]))
    else:
        if train_store is not None and Path(train_store).resolve() != Path(store_path).resolve():
            raise ScanError(train_store, f"training on another store than {store_path} needs split 'cross'")
        folds = make_folds(store_table(store_path), protocol, store_classes)
    log_folds(folds)
    atomic.write_csv(out_csv, folds)
    return folds


def read_folds(folds_csv: str | Path) -> pd.DataFrame:
    folds = pd.read_csv(folds_csv, dtype={"subject": str, "split": str, DATASET_COLUMN: str})
    check_folds(folds, folds_csv)
    return folds


def fold_of(folds: pd.DataFrame, k: int) -> tuple[int, int]:
    """(repeat, fold) of the job number ``k``."""
    rows = folds[folds["k"] == int(k)]
    if rows.empty:
        raise ScanError("folds", f"no fold k={k}")
    return int(rows["repeat"].iloc[0]), int(rows["fold"].iloc[0])


def fold_subjects(folds: pd.DataFrame, repeat: int, fold: int, dataset: str | None = None) -> dict[str, list[str]]:
    """Train and test subjects of one fold; of one ``dataset`` when the folds have a dataset column."""
    rows = folds[(folds["repeat"] == int(repeat)) & (folds["fold"] == int(fold))]
    if rows.empty:
        raise ScanError("folds", f"no repeat {repeat} fold {fold}")
    if dataset is not None and DATASET_COLUMN in rows.columns:
        rows = rows[rows[DATASET_COLUMN].astype(str) == str(dataset)]
    return {split: sorted(rows.loc[rows["split"] == split, "subject"].astype(str)) for split in ("train", "test")}


def fold_samples(store_path: str | Path, folds_csv: str | Path, repeat: int, fold: int, protocol: dict | None) -> dict:
    """Store indices of one fold's train and test samples after the protocol's sample filter.

    Returns ``{"train": int64 array, "test": int64 array, "classes": [...], "train_classes": [...],
    "store_classes": [...], "train_subjects": [...], "test_subjects": [...], "dataset": str,
    "cross": bool}``. ``classes`` is the protocol's (experiment's) class set, in the order that
    defines the class indices of evaluation; ``train_classes`` those of training (the same list
    unless the protocol is "cross"). In a cross fold a store only yields the split(s) its own
    dataset is in: the training store gives ``train``, the test store ``test`` (the other is empty).
    """
    from smile_vlm.store import open_store, store_table

    root = open_store(store_path)
    store_classes = list(root.attrs["classes"])
    dataset = str(root.attrs.get("dataset", ""))
    protocol = resolve_protocol(protocol)
    cross = protocol["split"] == "cross"
    folds = read_folds(folds_csv)
    if cross and DATASET_COLUMN not in folds.columns:
        raise ScanError(folds_csv, "protocol split is 'cross' but the folds have no dataset column")
    if DATASET_COLUMN in folds.columns and dataset not in set(folds[DATASET_COLUMN].astype(str)):
        raise ScanError(store_path, f"store dataset {dataset!r} is not one of the folds' datasets "
                                    f"{sorted(set(folds[DATASET_COLUMN].astype(str)))} ({folds_csv})")
    subjects = fold_subjects(folds, repeat, fold, dataset)
    table = store_table(store_path)
    table_subjects = table["subject"].astype(str).to_numpy()
    result = {}
    for split in ("train", "test"):
        keep = sample_filter(table, split_protocol(protocol, split), store_classes)
        result[split] = np.flatnonzero(keep & np.isin(table_subjects, subjects[split])).astype(np.int64)
    if not cross:
        classes = train_classes = list(protocol["classes"] or store_classes)
        wanted = set(classes)
    else:
        # Each store of a cross fold is checked for the classes of the split(s) it provides; the
        # trained classes are known only where the training subjects are (None in the test store).
        if not protocol["classes"]:
            raise ScanError("protocol", "split 'cross' needs the experiment's classes (e.g. [happiness, disgust])")
        classes = list(protocol["classes"])
        train_classes = cross_classes(protocol, store_classes)[0] if subjects["train"] else None
        wanted = set(train_classes or []) | (set(classes) if subjects["test"] else set())
    unknown = wanted - set(store_classes)
    if unknown:
        raise ScanError(store_path, f"protocol classes {sorted(unknown)} are not in the store")
    return {**result, "classes": classes, "train_classes": train_classes, "store_classes": store_classes,
            "train_subjects": subjects["train"], "test_subjects": subjects["test"],
            "dataset": dataset, "cross": cross}


def class_index_map(store_classes: list[str], classes: list[str]) -> np.ndarray:
    """Map store class index -> protocol class index (-1 for classes the protocol drops)."""
    position = {name: index for index, name in enumerate(classes)}
    return np.array([position.get(name, -1) for name in store_classes], dtype=np.int64)
