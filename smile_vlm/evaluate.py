"""Evaluation of one trained fold: zero-shot metrics, a linear probe, learned view weights.

Zero-shot (SMILE-VLM §III-D): the prediction is argmax_k of ``model.class_scores`` against the
prompt-ensembled class embeddings (``TextBank.class_embeddings``) of the test subjects' samples.

Metrics (accuracy, F1, the multi-label decision, the probe): metrics.py.

Linear probe: logistic regression (sklearn, lbfgs; float64, one BLAS thread, metrics.PROBE_TOL)
on L2-normalised frozen fused embeddings of the fold's train split, scored on its test split
(multi-label: one binary probe per class, mean per-class accuracy).

Single view (``settings["evaluate"]["single_view"]``, default true; SMILE-VLM Table V): the same
zero-shot metrics with the model seeing one view alone, under ``"single_view": {"yaw -30": {...},
"yaw +0": {...}, "yaw +30": {...}}``. The other views are removed through the fusion's view mask,
not re-trained: the paper's left/front/right rows (left = yaw -30, front = yaw 0, right = yaw +30)
come from the 4DME baseline [56] with one model per view, ours from the multi-view model.

Cross-dataset folds (protocol split "cross", SMILE-VLM §IV-C: train on BU-4DFE, test on BP4D
T1/T8): the evaluated store is the test store; the model was trained on ``trained_classes`` of
another store. The decision is over the experiment's classes (``protocol.predict_classes``
"experiment", default: happiness vs disgust) or over every trained class ("train"). The probe
trains on the training store (recorded in model.pt) with the trained classes as targets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from smile_vlm import atomic
from smile_vlm.augment import Augmenter
from smile_vlm.errors import ScanError
from smile_vlm.folds import fold_samples, fold_subjects, read_folds, resolve_protocol
from smile_vlm.metrics import linear_probe_accuracy, multilabel_probe_accuracy, view_weights_per_class, zero_shot_metrics
from smile_vlm.models import image_input, load_trained
from smile_vlm.prompts import build_text_bank
from smile_vlm.runtime import select_device
from smile_vlm.settings import resolve_settings, vision_init_name
from smile_vlm.targets import FoldTargets
from smile_vlm.views import view_names
from smile_vlm.wise import variant_alpha

LOG = logging.getLogger(__name__)


# --------------------------------------------------------------------------- one fold

@torch.no_grad()
def single_view_scores(model, images: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
    """(V, B, K) zero-shot scores of each view alone.

    Every view is still encoded (one shared encoder, per-view in eval mode), but the fusion's view
    mask keeps only view v: SMILE-VLM's softmax weights (Eq. 7) and FACET-VLM's attention keys and
    pooling then ignore the other views, so their pixels cannot change view v's scores.
    """
    batch, n_views = images.shape[:2]
    scores = []
    for view in range(n_views):
        mask = torch.zeros(batch, n_views, dtype=torch.bool, device=images.device)
        mask[:, view] = True
        scores.append(model.class_scores(images, class_emb, mask).float())
    return torch.stack(scores)


@dataclass
class Embedder:
    """The trained model with what scoring a store needs: the clean-view preprocessing and the class
    embeddings of the decision."""

    model: torch.nn.Module
    augmenter: Augmenter
    class_emb: torch.Tensor
    device: torch.device
    batch_size: int

    @torch.no_grad()
    def embed(self, store_path, indices, targets: FoldTargets, single_view: bool = False):
        """Fused embeddings, fusion weights, class scores and targets of the store's ``indices``;
        with ``single_view`` also (V, N, K) class scores from each view alone (None otherwise)."""
        from smile_vlm.data import StoreDataset

        dataset = StoreDataset(store_path, indices, "multi" if targets.multi_label else "single")
        loader = torch.utils.data.DataLoader(dataset, batch_size=self.batch_size, shuffle=False)
        fused, weights, scores, labels, per_view = [], [], [], [], []
        for batch in loader:
            images = self.augmenter.clean(batch["images"], self.device)
            output = self.model(images)
            fused.append(torch.nn.functional.normalize(output["z_fused"].float(), dim=-1).cpu())
            weights.append(output["weights"].float().cpu())
            scores.append(self.model.class_scores(images, self.class_emb).float().cpu())
            labels.append(targets.labels(batch))
            if single_view:
                per_view.append(single_view_scores(self.model, images, self.class_emb).cpu())
        view_scores = torch.cat(per_view, dim=1).numpy() if single_view else None
        return (torch.cat(fused).numpy(), torch.cat(weights).numpy(), torch.cat(scores).numpy(),
                torch.cat(labels).numpy(), view_scores)


def decision_scale(model) -> float:
    """The logit scale the model was trained with: 1/tau of its loss settings (Eq. 6)."""
    return 1.0 / float(model.loss_settings["tau"])


def prediction_classes(protocol: dict, split: dict, trained: list[str], checkpoint) -> list[str]:
    """The classes the zero-shot decision is over (and the class indices of the metrics).

    Within one dataset: the fold's classes, which must be the trained ones. Across datasets
    (split "cross"): the experiment's classes (default, e.g. a 2-way happiness/disgust decision on
    BP4D T1/T8) or, with ``predict_classes: "train"``, every trained class, so that answering one of
    the other trained classes counts as an error.
    """
    classes = split["classes"]
    if not split["cross"]:
        if list(trained) != classes:
            raise ValueError(f"{checkpoint}: trained on classes {trained}, evaluating {classes}")
        return classes
    untrained = [name for name in classes if name not in trained]
    if untrained:
        raise ValueError(f"{checkpoint}: classes {untrained} are evaluated but were not trained ({trained})")
    return classes if protocol["predict_classes"] == "experiment" else list(trained)


@dataclass
class FoldRun:
    """One fold's evaluation inputs, checked: the trained model against the store and the fold it
    is evaluated on, the classes of the decision and the embedder that scores the store."""

    resolved: dict
    protocol: dict
    split: dict
    folds: object  # the folds table (pandas)
    store_attrs: dict
    multi_label: bool
    model: torch.nn.Module
    saved: dict
    classes: list
    targets: FoldTargets
    embedder: Embedder


def load_fold(store_path, folds_csv, repeat: int, fold: int, checkpoint, resolved: dict, *, train_store,
              text_bank_file, device) -> FoldRun:
    """The model of ``checkpoint`` ready to score the fold's samples of ``store_path``, after
    refusing a model made for another store, fold or class list."""
    from smile_vlm.store import open_store

    protocol = resolve_protocol(resolved["protocol"])
    split = fold_samples(store_path, folds_csv, repeat, fold, protocol)
    if not len(split["test"]):
        raise ScanError(store_path, f"repeat {repeat} fold {fold} has no test sample in this store "
                                    f"(dataset {split['dataset']!r}); is it the fold's test store?")
    store_attrs = open_store(store_path).attrs
    multi_label = bool(store_attrs["multi_label"])

    model, saved = load_trained(checkpoint, device)
    _check_compatible(saved, store_attrs, multi_label, checkpoint, store_path)
    folds = read_folds(folds_csv)
    check_same_fold(saved, _asked(resolved, repeat, fold, split, folds, saved, store_path, train_store), checkpoint)
    classes = prediction_classes(protocol, split, list(saved["classes"]), checkpoint)
    targets = FoldTargets(split["store_classes"], classes, multi_label)
    text_bank = build_text_bank(resolved, classes, text_bank_file)
    size, mean, std = image_input(model)
    embedder = Embedder(model, Augmenter(size, None, mean, std), text_bank.class_embeddings().to(device), device,
                        int(resolved["evaluate"]["batch_size"]))
    return FoldRun(resolved, protocol, split, folds, store_attrs, multi_label, model, saved, classes, targets, embedder)


def describe_fold(run: FoldRun, repeat: int, fold: int, checkpoint, variant: dict | None) -> dict:
    """The evaluation JSON's facts about the fold: which model, classes, views, subjects and settings."""
    split, saved = run.split, run.saved
    prompts_source = saved["settings"]["prompts"]["source"]
    result = {
        "k": _job_number(run.folds, repeat, fold),
        "experiment": run.resolved["experiment"],
        "prompts_source": prompts_source, "supervision": run.model.supervision(prompts_source),
        "init": vision_init_name(saved["variant"]),
        "wise_alpha": variant_alpha(saved["variant"]), "init_head": bool(saved["variant"].get("init_head", False)),
        "replay": float(saved["variant"].get("replay", 0.0)),
        "repeat": int(repeat), "fold": int(fold), "checkpoint": str(checkpoint),
        "variant": (variant or {}).get("name") or saved["variant"].get("name"),
        "classes": run.classes, "views": list(run.store_attrs["views"]), "multi_label": run.multi_label,
        "n_train": int(saved.get("n_train", len(split["train"]))) if split["cross"] else int(len(split["train"])),
        "n_test": int(len(split["test"])),
        "train_subjects": split["train_subjects"], "test_subjects": split["test_subjects"],
        "protocol": run.resolved["protocol"], "evaluate": run.resolved["evaluate"],
    }
    if split["cross"]:
        train_dataset = saved.get("train_dataset")
        result.update({"train_dataset": train_dataset, "test_dataset": split["dataset"],
                       "trained_classes": list(saved["classes"]),
                       "train_subjects": fold_subjects(run.folds, repeat, fold, train_dataset)["train"]})
    return result


def zero_shot_results(run: FoldRun, test) -> dict:
    """Zero-shot metrics of the test samples (with each view alone under ``single_view``) and the
    learned view weights per class."""
    _, test_weights, test_scores, test_labels, view_scores = test
    options, classes, multi_label = run.resolved["evaluate"], run.classes, run.multi_label
    scale = decision_scale(run.model)
    result = {}
    if multi_label:
        result["multilabel_decision"] = {"rule": options["multilabel_rule"], "scale": scale,
                                         "scale_source": f"training 1/tau, tau = {1 / scale:g}"}
    result.update(zero_shot_metrics(test_scores, test_labels, classes, multi_label, options, scale))
    membership = test_labels.astype(bool) if multi_label else np.eye(len(classes), dtype=bool)[test_labels]
    # Only learned fusion weights say which view a class relies on (FACET's CVSA pools uniformly).
    result["view_weights"] = None
    if run.model.learns_view_weights:
        weights = view_weights_per_class(test_weights, membership)
        result["view_weights"] = {name: row.tolist() for name, row in zip(classes, weights)}
    if view_scores is not None:
        result["single_view"] = {name: zero_shot_metrics(scores, test_labels, classes, multi_label, options, scale)
                                 for name, scores in zip(view_names(list(run.store_attrs["views"])), view_scores)}
    return result


def probe_accuracy(run: FoldRun, test, fold_key: tuple, checkpoint, store_path, train_store) -> float | None:
    """The linear probe's accuracy on the test embeddings (None when evaluate.linear_probe is off).
    ``fold_key``: (folds CSV, repeat, fold) of this fold."""
    if not run.resolved["evaluate"]["linear_probe"]:
        return None
    test_fused, _, _, test_labels, _ = test
    train_fused, train_labels, probe_test_labels = _probe_inputs(
        run.embedder, run.saved, checkpoint, run.split, store_path, (*fold_key, run.resolved["protocol"]),
        run.targets, test_labels, train_store)
    probe = multilabel_probe_accuracy if run.multi_label else linear_probe_accuracy
    return probe(train_fused, train_labels, test_fused, probe_test_labels,
                 float(run.resolved["evaluate"]["probe_c"]), int(run.resolved["train"]["seed"]))


def evaluate_fold(store_path, folds_csv, repeat: int, fold: int, checkpoint, variant: dict | None,
                  settings: dict | None, out_json, *, train_store=None, text_bank_file=None) -> dict:
    """Zero-shot and linear-probe metrics of one fold's test subjects, written atomically as JSON.

    ``checkpoint`` is the ``model.pt`` of train_fold (it carries the variant it was built with;
    ``variant`` is only recorded). ``settings``: the same sections as train_fold, plus
    ``evaluate``.

    ``store_path`` is the evaluated (test) store. Cross-dataset folds (protocol split "cross") train
    on another store: its training split is only needed by the linear probe, read from
    ``train_store`` or else from the path recorded in the checkpoint. ``text_bank_file``: the
    prompt embeddings of ``smile-vlm text-bank`` (else the text encoder is loaded).

    With ``evaluate.single_view`` the JSON also has ``single_view``: {view name: metrics} where the
    model sees one view alone (the fusion's view mask drops the others), for SMILE-VLM Table V.
    """
    resolved = resolve_settings(settings)
    device = select_device(resolved["train"]["device"])
    if resolved["train"]["threads"]:
        torch.set_num_threads(int(resolved["train"]["threads"]))
    run = load_fold(store_path, folds_csv, repeat, fold, checkpoint, resolved, train_store=train_store,
                    text_bank_file=text_bank_file, device=device)
    test = run.embedder.embed(store_path, run.split["test"], run.targets,
                              single_view=bool(resolved["evaluate"]["single_view"]))
    result = describe_fold(run, repeat, fold, checkpoint, variant)
    result.update(zero_shot_results(run, test))
    result["linear_probe_accuracy"] = probe_accuracy(run, test, (folds_csv, repeat, fold), checkpoint, store_path,
                                                     train_store)

    atomic.write_json(out_json, _nan_to_none(result))
    LOG.info("%s fold %s (%s, %d test samples): zero-shot accuracy %.2f %%, macro-F1 %.4f, linear probe %s",
             result["variant"], result["k"], result["supervision"], result["n_test"], 100 * result["accuracy"],
             result["macro_f1"], "n/a" if result["linear_probe_accuracy"] is None
             else f"{100 * result['linear_probe_accuracy']:.2f} %")
    return result


def _asked(resolved: dict, repeat: int, fold: int, split: dict, folds, saved: dict, store_path, train_store) -> dict:
    """What this evaluation needs the model to have been trained for (compared by check_same_fold)."""
    from smile_vlm.store import open_store

    asked = {"experiment": resolved["experiment"], "repeat": int(repeat), "fold": int(fold)}
    if split["cross"]:
        asked["train_subjects"] = fold_subjects(folds, repeat, fold, saved.get("train_dataset"))["train"]
        if train_store is not None:
            asked["store_settings_hash"] = str(open_store(train_store).attrs["settings_hash"])
    else:
        asked["classes"] = list(split["train_classes"])
        asked["train_subjects"] = split["train_subjects"]
        asked["store_settings_hash"] = str(open_store(store_path).attrs["settings_hash"])
    asked["train_subjects"] = sorted(str(s) for s in asked["train_subjects"])
    return asked


def check_same_fold(saved: dict, asked: dict, checkpoint) -> None:
    """Refuse a model trained for another experiment, repeat, fold, class list, training subjects
    or store: its test subjects may be this fold's training subjects, and the number would look
    clean. One line names both sides."""
    trained = {key: saved.get(key) for key in asked}
    if "train_subjects" in trained and trained["train_subjects"] is not None:
        trained["train_subjects"] = sorted(str(s) for s in trained["train_subjects"])
    differ = [key for key in asked if trained[key] != asked[key]]
    if differ:
        raise ScanError(checkpoint, f"trained for {_describe(trained, differ)}, but this evaluation is "
                                    f"{_describe(asked, differ)} (differs in {', '.join(differ)}); "
                                    "evaluate it with its own fold's inputs")


def _describe(run: dict, differ: list[str]) -> str:
    text = f"experiment {run['experiment']!r} repeat {run['repeat']} fold {run['fold']}"
    for key in differ:
        if key in ("experiment", "repeat", "fold"):
            continue
        value = run[key]
        if key == "store_settings_hash" and isinstance(value, str):
            value = value[:12]
        if key == "train_subjects" and isinstance(value, list):
            value = f"({len(value)}: {', '.join(value[:4])}{', ...' if len(value) > 4 else ''})"
        text += f", {key} {value}"
    return text


def _check_compatible(saved: dict, store_attrs, multi_label: bool, checkpoint, store_path) -> None:
    """A model only makes sense on a store rendered with its views and its kind of labels."""
    if "views" in saved and list(saved["views"]) != list(store_attrs["views"]):
        raise ScanError(store_path, f"views {list(store_attrs['views'])} differ from the views the model "
                                    f"was trained on {list(saved['views'])} ({checkpoint})")
    if "multi_label" in saved and bool(saved["multi_label"]) != multi_label:
        raise ScanError(store_path, f"multi_label={multi_label} but {checkpoint} was trained with "
                                    f"multi_label={bool(saved['multi_label'])}")


def _probe_inputs(embedder: Embedder, saved: dict, checkpoint, split: dict, store_path, fold_key: tuple,
                  targets: FoldTargets, test_labels, train_store):
    """(train embeddings, train targets, test targets) of the linear probe.

    Within one dataset the probe trains on the fold's train split of the same store. Across datasets
    it trains on the training store's split with the trained classes as targets, so the test targets
    are re-expressed in that class space (the experiment's classes are among the trained ones).
    ``fold_key``: (folds CSV, repeat, fold, protocol) of this fold.
    """
    from smile_vlm.store import open_store

    if not split["cross"]:
        train_fused, _, _, train_labels, _ = embedder.embed(store_path, split["train"], targets)
        return train_fused, train_labels, test_labels
    if train_store is None:
        train_store = saved.get("train_store")
    if not train_store:
        raise ScanError(checkpoint, "the cross-dataset linear probe needs the training store: pass "
                                    "train_store or set evaluate.linear_probe to false")
    # open_store raises a ScanError naming the path when the recorded store has moved.
    if str(open_store(train_store).attrs["dataset"]) != saved.get("train_dataset"):
        raise ScanError(train_store, f"not the training store of this model ({saved.get('train_dataset')!r})")
    train_split = fold_samples(train_store, *fold_key)
    trained = list(saved["classes"])
    train_targets = FoldTargets(train_split["store_classes"], trained, targets.multi_label)
    train_fused, _, _, train_labels, _ = embedder.embed(train_store, train_split["train"], train_targets)
    to_trained = FoldTargets(split["store_classes"], trained, targets.multi_label)
    store_labels = _store_labels(store_path, split["test"], targets.multi_label)
    return train_fused, train_labels, to_trained.labels(store_labels).numpy()


def _store_labels(store_path, indices, multi_label: bool) -> dict:
    from smile_vlm.store import open_store

    root = open_store(store_path)
    if multi_label:
        return {"labels": torch.from_numpy(root["labels"][:][indices].astype(np.float32))}
    return {"label": torch.from_numpy(root["label"][:][indices].astype(np.int64))}


def _job_number(folds, repeat: int, fold: int) -> int:
    rows = folds[(folds["repeat"] == int(repeat)) & (folds["fold"] == int(fold))]
    return int(rows["k"].iloc[0])


def _nan_to_none(value):
    """JSON has no NaN: an undefined metric (a class absent from the fold) is written as null."""
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(item) for item in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
