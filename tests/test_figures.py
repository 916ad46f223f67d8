"""Figures: the numbers each one draws (by hand), and that each PNG builds, has its size, is not blank."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from smile_vlm import figures
from smile_vlm.figures import ablation, common, curves, evaluation
from smile_vlm.errors import ScanError
from smile_vlm.report import write_table
from test_store import COLOURS, static_store  # noqa: F401 (static_store is a fixture)

CLASSES = ["anger", "disgust", "fear"]
VIEWS = [{"yaw": 0, "pitch": 0}, {"yaw": -30, "pitch": 0}]


def _write_eval(path, variant, k, matrix, weights, accuracy=0.5):
    path.write_text(json.dumps({
        "variant": variant, "k": k, "accuracy": accuracy, "macro_f1": 0.5, "linear_probe_accuracy": None,
        "n_test": int(np.sum(matrix)), "multi_label": False, "classes": CLASSES, "views": VIEWS,
        "confusion": {"classes": CLASSES, "rows": "true", "columns": "predicted", "matrix": matrix},
        "view_weights": dict(zip(CLASSES, weights))}))
    return path


@pytest.fixture
def two_folds(tmp_path):
    return [
        _write_eval(tmp_path / "fold0.json", "smile_vlm", 0, [[2, 1, 0], [0, 1, 0], [0, 0, 0]],
                    [[0.6, 0.4], [0.5, 0.5], [None, None]]),
        _write_eval(tmp_path / "fold1.json", "smile_vlm", 1, [[1, 0, 0], [0, 2, 1], [0, 0, 0]],
                    [[0.8, 0.2], [0.3, 0.7], [None, None]]),
    ]


def _png(path):
    """RGB pixels of a written PNG, checked not to be a blank canvas."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    drawn = (pixels < 250).any(axis=-1).mean()
    assert drawn > 0.03, f"{path} is almost blank ({drawn:.1%} drawn)"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # colour maps and text, not one flat fill
    # nothing runs off the canvas: a title or legend wider than the figure leaves ink on its edge
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3),
                             pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    assert (border >= 250).all(), f"{path}: something is cut off at the edge of the figure"
    return pixels


def test_view_label():
    assert common.view_label({"yaw": -30, "pitch": 0}) == "yaw -30°"
    assert common.view_label({"yaw": 30.0, "pitch": 15}) == "yaw +30°, pitch +15°"
    assert common.view_label("yaw -30") == "yaw -30"


def test_confusion_is_summed_over_folds_and_row_normalised(two_folds):
    classes, counts = evaluation.summed_confusion(common.load_evaluations(two_folds))
    assert classes == CLASSES
    np.testing.assert_array_equal(counts, [[3, 1, 0], [0, 3, 1], [0, 0, 0]])
    percent = evaluation.row_percent(counts)
    np.testing.assert_allclose(percent[:2], [[75.0, 25.0, 0.0], [0.0, 75.0, 25.0]])
    assert np.isnan(percent[2]).all()  # no test sample of "fear": no row to normalise, drawn "n/a"


def test_confusion_figure(two_folds, tmp_path):
    out = tmp_path / "figures" / "confusion.png"
    figures.confusion_figure(two_folds, out)
    assert evaluation.confusion_size(3) == pytest.approx((4.85, 4.25))
    assert Image.open(out).size == (485, 425)
    _png(out)
    assert [p.name for p in out.parent.iterdir()] == ["confusion.png"]  # no temporary left behind


def test_confusion_refuses_multilabel_and_mixed_classes(two_folds, tmp_path):
    multi = tmp_path / "ml.json"
    multi.write_text(json.dumps({"variant": "smile_vlm", "k": 0, "multi_label": True}))
    with pytest.raises(ScanError, match="ml.json: multi-label evaluation has no confusion matrix"):
        figures.confusion_figure([multi], tmp_path / "x.png")
    other = json.loads(two_folds[1].read_text())
    other["confusion"]["classes"] = ["a", "b", "c"]
    two_folds[1].write_text(json.dumps(other))
    with pytest.raises(ScanError, match="fold1.json: classes"):
        evaluation.summed_confusion(common.load_evaluations(two_folds))


def test_view_weights_mean_and_spread_over_folds(two_folds, tmp_path):
    frame = evaluation.view_weight_frame(common.load_evaluations(two_folds))
    assert set(frame["view"]) == {"yaw +0°", "yaw -30°"}
    assert "fear" not in set(frame["class"])  # absent from every test split: no weight, not zero
    summary = evaluation.view_weight_summary(frame).set_index(["class", "view"])
    assert summary.loc[("anger", "yaw +0°"), "mean"] == pytest.approx(0.7)
    assert summary.loc[("anger", "yaw +0°"), "std"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    assert summary.loc[("disgust", "yaw -30°"), "mean"] == pytest.approx(0.6)
    assert summary.loc[("disgust", "yaw -30°"), "n"] == 2

    out = tmp_path / "view_weights.png"
    figures.view_weights_figure(two_folds, out)
    assert Image.open(out).size == (520, 420)  # view_weights_size(2 classes) = (5.2, 4.2) in at 100 dpi
    _png(out)


def test_variants_without_learned_view_weights_get_no_panel(two_folds, tmp_path):
    facet = tmp_path / "facet.json"
    _write_eval(facet, "facet_vlm_prompt", 0, [[1, 0, 0], [0, 1, 0], [0, 0, 0]], [[0.5, 0.5]] * 3)
    result = json.loads(facet.read_text())
    facet.write_text(json.dumps({**result, "view_weights": None}))  # as evaluate writes it for FACET-VLM
    frame = evaluation.view_weight_frame(common.load_evaluations([*two_folds, facet]))
    assert set(frame["variant"]) == {"smile_vlm"}
    out = tmp_path / "view_weights.png"
    figures.view_weights_figure([*two_folds, facet], out)
    assert Image.open(out).size == (520, 420)  # one panel: smile_vlm only
    _png(out)
    with pytest.raises(ValueError, match="no view weights"):
        figures.view_weights_figure([facet], tmp_path / "none.png")


def _write_log(path, rows):
    lines = [json.dumps({"kind": "step", "epoch": 0, "step": 1, "lr": 1e-4, "total": 999.0})]
    lines += [json.dumps({"kind": "epoch", "epoch": e, "step": e + 1, "lr": 1e-4, "mv_bt": mv, "vl_align": vl,
                          "red_min": rm, "total": mv + vl + rm, "samples_per_s": 50.0, "seconds": 1.0})
              for e, (mv, vl, rm) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_loss_curves_average_epoch_lines_over_folds(tmp_path):
    logs = [_write_log(tmp_path / "a.jsonl", [(400.0, 3.0, 10.0), (100.0, 2.0, 8.0)]),
            _write_log(tmp_path / "b.jsonl", [(200.0, 5.0, 12.0), (50.0, 2.0, 6.0)])]
    frame = curves.loss_curve_frame(logs)
    assert list(dict.fromkeys(frame["term"])) == ["mv_bt", "vl_align", "red_min", "total"]
    mv = frame[frame.term == "mv_bt"].set_index("epoch")
    assert mv["mean"].tolist() == [300.0, 75.0]  # the step line (total 999) is not an epoch
    assert mv.loc[0, "std"] == pytest.approx(np.std([400, 200], ddof=1)) and (mv["n"] == 2).all()
    total = frame[frame.term == "total"].set_index("epoch")
    assert total.loc[1, "mean"] == pytest.approx((110.0 + 58.0) / 2)

    assert curves.use_log_scale([400.0, 30.0]) and not curves.use_log_scale([3.0, 2.0])
    assert not curves.use_log_scale([100.0, 0.0])  # a zero has no logarithm

    out = tmp_path / "curves.png"
    figures.training_curves_figure(logs, out)
    assert curves.curve_grid(4) == (2, 2) and curves.curve_grid(5) == (2, 3)
    assert Image.open(out).size == (770, 620)
    _png(out)


def test_broken_training_log_names_file_and_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    log.write_text('{"kind": "epoch", "epoch": 0, "total": 1.0}\nnot json\n')
    with pytest.raises(ScanError, match="train_log.jsonl: line 2 is not JSON"):
        curves.read_train_log(log)


def _experiment_table(tmp_path, name, accuracies: dict):
    evals = []
    for variant, values in accuracies.items():
        for k, accuracy in enumerate(values):
            path = tmp_path / f"{name}_{variant}_{k}.json"
            path.write_text(json.dumps({"variant": variant, "k": k, "accuracy": accuracy / 100, "macro_f1": 0.5,
                                        "linear_probe_accuracy": None, "n_test": 10}))
            evals.append(path)
    out = tmp_path / "tables" / f"{name}.csv"
    write_table({"name": name}, evals, out)
    return out


@pytest.fixture
def ablation_tables(tmp_path):
    return [
        _experiment_table(tmp_path, "bu4dfe", {"smile_vlm": [80.0, 90.0], "smile_vlm_no_mv_bt": [70.0, 74.0],
                                               "smile_vlm_no_red_min": [85.0, 85.0], "facet_vlm": [50.0, 50.0]}),
        _experiment_table(tmp_path, "bp4d", {"smile_vlm_no_vl_align": [60.0, 62.0], "smile_vlm": [61.0, 65.0]}),
    ]


def test_ablation_table_means_deltas_and_paper_order(ablation_tables):
    accuracies = ablation.accuracies_from_tables(ablation_tables)
    # only the ablation variants, in the paper's order; facet_vlm is not one of them
    assert accuracies == {"bu4dfe": {"smile_vlm": [80.0, 90.0], "smile_vlm_no_red_min": [85.0, 85.0],
                                     "smile_vlm_no_mv_bt": [70.0, 74.0]},
                          "bp4d": {"smile_vlm": [61.0, 65.0], "smile_vlm_no_vl_align": [60.0, 62.0]}}
    table = figures.ablation_table(accuracies)
    assert table.columns.tolist() == ["dataset", "variant", "label", "accuracy_mean", "accuracy_std", "n_folds",
                                      "delta_vs_full"]
    rows = table.set_index(["dataset", "variant"])
    assert rows.loc[("bu4dfe", "smile_vlm_no_mv_bt"), "accuracy_mean"] == 72.0
    assert rows.loc[("bu4dfe", "smile_vlm_no_mv_bt"), "delta_vs_full"] == -13.0
    assert rows.loc[("bu4dfe", "smile_vlm_no_red_min"), "accuracy_std"] == 0.0
    assert rows.loc[("bp4d", "smile_vlm_no_vl_align"), "delta_vs_full"] == -2.0
    assert rows.loc[("bp4d", "smile_vlm_no_vl_align"), "label"] == "w/o vl-align"
    assert rows.loc[("bp4d", "smile_vlm"), "accuracy_std"] == pytest.approx(np.std([61, 65], ddof=1))
    assert (rows["n_folds"] == 2).all()


def test_ablation_figure_and_csv_from_tables(ablation_tables, tmp_path):
    out_png, out_csv = tmp_path / "figures" / "ablation.png", tmp_path / "tables" / "ablation.csv"
    figures.make_figure("ablation", ablation_tables, out_png, table_out=out_csv)
    written = pd.read_csv(out_csv)
    assert written.variant.tolist() == ["smile_vlm", "smile_vlm_no_red_min", "smile_vlm_no_mv_bt", "smile_vlm",
                                        "smile_vlm_no_vl_align"]
    assert written.delta_vs_full.tolist() == [0.0, 0.0, -13.0, 0.0, -2.0]
    assert Image.open(out_png).size == (700, 450)  # ablation_size(2 datasets): the minimum width
    _png(out_png)


def test_ablation_figure_of_one_dataset_fits_its_title_and_legend(tmp_path):
    # the default configuration ablates on BU-4DFE alone: four bars, a long title, a 4-entry legend
    table = _experiment_table(tmp_path, "bu4dfe", {"smile_vlm": [95.8, 95.8], "smile_vlm_no_red_min": [91.7, 91.7],
                                                   "smile_vlm_no_vl_align": [62.5, 70.8],
                                                   "smile_vlm_no_mv_bt": [87.5, 100.0]})
    out_png = tmp_path / "ablation.png"
    figures.make_figure("ablation", [table], out_png)
    _png(out_png)


def test_gain_matrix_by_hand():
    accuracy = pd.DataFrame({"bu4dfe": [90.0, 84.0, 85.5], "bp4d": [70.0, 71.0, np.nan]},
                            index=["smile_vlm", "smile_vlm_no_red_min", "smile_vlm_no_mv_bt"])
    gains = ablation.gain_matrix(accuracy)
    assert gains.index.tolist() == ["SMILE-VLM (full) vs w/o red-min", "SMILE-VLM (full) vs w/o mv-bt"]
    assert gains.columns.tolist() == ["bu4dfe", "bp4d"]
    assert gains.loc["SMILE-VLM (full) vs w/o red-min"].tolist() == [6.0, -1.0]
    assert gains.loc["SMILE-VLM (full) vs w/o mv-bt", "bu4dfe"] == 4.5
    assert np.isnan(gains.loc["SMILE-VLM (full) vs w/o mv-bt", "bp4d"])
    progressive = ablation.gain_matrix(accuracy, pairs=[("smile_vlm_no_mv_bt", "smile_vlm_no_red_min")])
    assert progressive.loc["w/o mv-bt vs w/o red-min", "bu4dfe"] == 1.5
    with pytest.raises(KeyError, match="facet_vlm"):
        ablation.gain_matrix(accuracy, reference="facet_vlm")


def test_gains_heatmap_from_tables(ablation_tables, tmp_path):
    accuracy = ablation.accuracy_matrix(ablation_tables)
    assert accuracy.loc["smile_vlm"].tolist() == [85.0, 63.0]
    assert np.isnan(accuracy.loc["smile_vlm_no_mv_bt", "bp4d"])  # not run on bp4d
    out = tmp_path / "gains.png"
    gains = figures.gains_heatmap_from_tables(ablation_tables, out)
    assert gains.index.tolist() == ["SMILE-VLM (full) vs w/o red-min", "SMILE-VLM (full) vs w/o vl-align",
                                    "SMILE-VLM (full) vs w/o mv-bt", "SMILE-VLM (full) vs facet_vlm"]
    assert gains.loc["SMILE-VLM (full) vs facet_vlm", "bu4dfe"] == 35.0
    assert gains.loc["SMILE-VLM (full) vs w/o vl-align", "bp4d"] == 2.0
    assert ablation.gains_size(*gains.shape) == pytest.approx((7.3, 3.8))
    assert Image.open(out).size == (730, 380)
    _png(out)


def test_unknown_figure_kind(tmp_path):
    with pytest.raises(ValueError, match="unknown figure kind 'pie'"):
        figures.make_figure("pie", [], tmp_path / "x.png")


def test_contact_sheet_size_and_content(static_store, tmp_path):
    out, _ = static_store
    sheet = tmp_path / "sheets" / "sheet.png"
    figures.contact_sheet(out, sheet, per_class=2, seed=0)

    pixels = np.asarray(Image.open(sheet).convert("RGB")).astype(int)
    # 1.2 in label band + 2 samples x 3 views x 1.6 in, by 0.8 in title + 3 classes x 1.6 in, at 100 dpi.
    assert pixels.shape == (560, 1080, 3)
    assert figures.sheet_size_pixels(3, 2, 3) == (1080, 560)

    def where(colour):  # exact match: the noise half hits a given colour with p = 2**-24
        return (pixels == colour).all(axis=2)

    # anger and disgust rows show their class colour; fear has no sample, so its colour is absent.
    assert where(COLOURS["anger"]).sum() > 1000
    assert where(COLOURS["disgust"]).sum() > 1000
    assert where(COLOURS["fear"]).sum() == 0
    # The anger colour sits in the top row of cells, the disgust colour in the second.
    anger_rows = np.flatnonzero(where(COLOURS["anger"]).any(axis=1))
    disgust_rows = np.flatnonzero(where(COLOURS["disgust"]).any(axis=1))
    assert anger_rows.max() < 80 + 160 < disgust_rows.min()
    assert not list(sheet.parent.glob(".*tmp*"))
