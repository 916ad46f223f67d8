import json

import numpy as np
import pandas as pd

from smile_vlm.report import build_table, write_table


def _eval(tmp_path, variant, k, accuracy, macro_f1, probe):
    path = tmp_path / f"{variant}_{k}.json"
    path.write_text(json.dumps({"variant": variant, "k": k, "accuracy": accuracy,
                                "macro_f1": macro_f1, "linear_probe_accuracy": probe, "n_test": 12}))
    return path


def test_table_has_folds_mean_std_and_reported_rows(tmp_path):
    evals = [
        _eval(tmp_path, "smile_vlm", 0, 0.75, 0.70, 0.80),
        _eval(tmp_path, "smile_vlm", 1, 1.00, 1.00, 0.90),
        _eval(tmp_path, "smile_vlm", 10, 0.50, 0.40, 0.70),
    ]
    table = build_table({"name": "bu4dfe", "dataset": "bu4dfe"}, evals)
    ours = table[table.source == "ours"]
    # folds sort numerically (10 after 1), then the mean row
    assert ours.fold.tolist() == ["0", "1", "10", "mean"]
    mean = ours[ours.fold == "mean"].iloc[0]
    assert np.isclose(mean.accuracy, 75.0)
    assert np.isclose(mean.accuracy_std, np.std([75.0, 100.0, 50.0], ddof=1))
    assert np.isclose(mean.macro_f1, (0.70 + 1.00 + 0.40) / 3)
    assert mean.n_test == 36
    reported = table[table.source == "reported"]
    smile = reported[reported.method == "SMILE-VLM"].iloc[0]
    assert smile.accuracy == 96.57  # Table III of the paper
    assert (ours.prompts == "label").all()


def test_write_table_is_a_readable_csv(tmp_path):
    evals = [_eval(tmp_path, "facet_vlm", 0, 0.5, 0.5, None)]
    out = tmp_path / "tables" / "x.csv"
    write_table({"name": "nothing_reported", "dataset": "bu4dfe"}, evals, out)
    table = pd.read_csv(out)
    assert table.source.tolist() == ["ours", "ours"]
    assert table.accuracy.tolist() == [50.0, 50.0]
    assert not any(p.name.startswith(".x.csv.tmp") for p in out.parent.iterdir())
