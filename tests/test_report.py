"""Experiment tables and the summary page, from tiny hand-written evaluation JSONs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from smile_vlm.errors import ScanError
from smile_vlm.report import REPORTED_MARK, build_table, write_table
from smile_vlm.summary import summary_markdown

FOURDME = ["positive", "negative", "surprise", "repression", "others"]


def _eval(tmp_path, variant, k, accuracy, macro_f1, probe, **extra):
    path = tmp_path / f"{variant}_{k}.json"
    path.write_text(json.dumps({"variant": variant, "k": k, "accuracy": accuracy, "supervision": "class prompts (labels)",
                                "macro_f1": macro_f1, "linear_probe_accuracy": probe, "n_test": 12, **extra}))
    return path


def _multilabel_metrics(f1, accuracy):
    return {"per_class_f1": dict(zip(FOURDME, f1)), "per_class_accuracy": dict(zip(FOURDME, accuracy)),
            "average_f1": float(np.nanmean(np.array(f1, dtype=float))), "average_accuracy": float(np.mean(accuracy)),
            "linear_probe_accuracy": 0.5}


def _multilabel_eval(tmp_path, k, f1, accuracy, single_view=None):
    path = tmp_path / f"ml_{k}.json"
    result = {"variant": "smile_vlm", "k": k, "multi_label": True, "classes": FOURDME, "n_test": 8,
              "supervision": "class prompts (labels)",
              "multilabel_decision": {"rule": "above_uniform", "scale": 1 / 0.07,
                                      "scale_source": "training 1/tau, tau = 0.07"},
              **_multilabel_metrics(f1, accuracy)}
    result["accuracy"], result["macro_f1"] = result["average_accuracy"], result["average_f1"]
    if single_view:
        result["single_view"] = single_view
    path.write_text(json.dumps(result))
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
    # the same columns whatever the evaluations hold (here no probe, nothing reported)
    assert table.columns.tolist() == ["source", "method", "fold", "setting", "prompts", "supervision", "init", "wise_alpha",
                                      "n_test", "accuracy",
                                      "accuracy_std", "macro_f1", "macro_f1_std", "linear_probe_accuracy",
                                      "linear_probe_accuracy_std"]
    assert table.source.tolist() == ["ours", "ours"]
    assert table.accuracy.tolist() == [50.0, 50.0]
    assert out.read_text().splitlines()[1] == "ours,facet_vlm,0,,label,class prompts (labels),random,1,12,50.0,,0.5,,,"
    assert not any(p.name.startswith(".x.csv.tmp") for p in out.parent.iterdir())


def test_every_row_says_which_vision_init_it_used(tmp_path):
    pretrained = "results/pretrain/default/vision.pt"
    evals = [_eval(tmp_path, "smile_vlm", k, 0.5, 0.5, 0.5, init=pretrained) for k in (0, 1)]
    evals += [_eval(tmp_path, "smile_vlm_scratch", k, 0.5, 0.5, 0.5, init="random") for k in (0, 1)]
    evals += [_eval(tmp_path, "facet_vlm", 0, 0.5, 0.5, 0.5)]  # written before init existed
    out = tmp_path / "tables" / "bu4dfe.csv"
    table = write_table({"name": "bu4dfe"}, evals, out)
    columns = table.columns.tolist()
    assert columns.index("init") == columns.index("supervision") + 1
    ours = table[table.source == "ours"]
    assert dict(zip(zip(ours.method, ours.fold), ours.init)) == {
        ("smile_vlm", "0"): pretrained, ("smile_vlm", "1"): pretrained, ("smile_vlm", "mean"): pretrained,
        ("smile_vlm_scratch", "0"): "random", ("smile_vlm_scratch", "1"): "random",
        ("smile_vlm_scratch", "mean"): "random", ("facet_vlm", "0"): "random", ("facet_vlm", "mean"): "random"}
    assert table[table.source == "reported"].init.isna().all()  # the paper's rows are not ours to label
    assert pd.read_csv(out).init.tolist()[:3] == [pretrained] * 3

    from smile_vlm.summary import readme_block
    page = summary_markdown([out], tmp_path / "summary.md")
    assert f"| smile_vlm | class prompts (labels) | {pretrained} | ours | 2 |" in page
    assert "| smile_vlm_scratch | class prompts (labels) | random | ours | 2 |" in page
    assert f"| smile_vlm | class prompts (labels) | {pretrained} | label | 2 |" in readme_block(out)
    # a table written before the column existed holds from-scratch rows only
    old = tmp_path / "tables" / "old.csv"
    pd.read_csv(out).drop(columns="init").to_csv(old, index=False)
    assert "| smile_vlm | class prompts (labels) | random | label | 2 |" in readme_block(old)


def test_each_method_keeps_its_folds_then_its_mean_in_evaluation_order(tmp_path):
    evals = [_eval(tmp_path, "smile_vlm", k, 0.5, 0.5, 0.5) for k in (1, 0)]
    evals += [_eval(tmp_path, "facet_vlm", k, 0.25, 0.5, 0.5) for k in (0, 1)]
    ours = build_table({"name": "none"}, evals)
    assert list(zip(ours.method, ours.fold)) == [
        ("smile_vlm", "0"), ("smile_vlm", "1"), ("smile_vlm", "mean"),
        ("facet_vlm", "0"), ("facet_vlm", "1"), ("facet_vlm", "mean")]


def test_single_view_rows_beside_the_multi_view_rows(tmp_path):
    evals = [
        _eval(tmp_path, "smile_vlm", k, accuracy, 0.5, 0.5, single_view={
            "yaw 0": {"accuracy": front, "macro_f1": 0.2, "linear_probe_accuracy": None},
            "yaw -30": {"accuracy": left, "macro_f1": 0.1, "linear_probe_accuracy": 0.3}})
        for k, accuracy, front, left in [(0, 0.9, 0.6, 0.4), (1, 0.7, 0.8, 0.2)]
    ]
    # only tables that ask for view rows (Table V) get them
    plain = build_table({"name": "none"}, evals)
    assert list(zip(plain.method, plain.fold)) == [("smile_vlm", "0"), ("smile_vlm", "1"), ("smile_vlm", "mean")]
    table = build_table({"name": "none", "view_rows": True}, evals)
    assert list(zip(table.method, table.fold)) == [
        ("smile_vlm", "0"), ("smile_vlm", "1"), ("smile_vlm", "mean"),
        ("smile_vlm (yaw 0 only)", "0"), ("smile_vlm (yaw 0 only)", "1"), ("smile_vlm (yaw 0 only)", "mean"),
        ("smile_vlm (yaw -30 only)", "0"), ("smile_vlm (yaw -30 only)", "1"), ("smile_vlm (yaw -30 only)", "mean")]
    means = table[table.fold == "mean"].set_index("method")
    assert means.accuracy.tolist() == pytest.approx([80.0, 70.0, 30.0])
    assert means.accuracy_std.tolist() == pytest.approx([np.std([90, 70], ddof=1), np.std([60, 80], ddof=1),
                                                         np.std([40, 20], ddof=1)])
    assert np.isnan(means.loc["smile_vlm (yaw 0 only)", "linear_probe_accuracy"])
    assert means.loc["smile_vlm (yaw -30 only)", "n_test"] == 24  # the fold's n_test when a view has none


def test_multilabel_table_per_class_f1_and_accuracy_then_reported_table_v(tmp_path):
    evals = [
        _multilabel_eval(tmp_path, 0, [0.5, 1.0, None, 0.0, 0.25], [0.50, 1.00, 0.75, 0.25, 0.50]),
        _multilabel_eval(tmp_path, 1, [0.7, 0.0, 0.6, 0.2, 0.25], [0.70, 0.50, 0.25, 0.75, 1.00]),
    ]
    table = build_table({"name": "4dme", "dataset": "4dme"}, evals)
    metrics = [f"{m}_{c}" for m in ("f1", "accuracy") for c in [*FOURDME, "average"]] + ["linear_probe_accuracy"]
    assert table.columns.tolist() == ["source", "method", "fold", "setting", "prompts", "supervision", "init",
                                      "wise_alpha", "decision", "n_test", *[c for m in metrics for c in (m, f"{m}_std")]]
    # the decision rule and its scale travel from each evaluation into every row, the means included
    assert set(table[table.source == "ours"].decision) == {
        "above_uniform at logit scale 14.29 (training 1/tau, tau = 0.07)"}
    ours = table[table.source == "ours"].set_index("fold")
    assert ours.loc["0", "accuracy_negative"] == 100.0 and ours.loc["1", "accuracy_surprise"] == 25.0
    assert np.isnan(ours.loc["0", "f1_surprise"])  # undefined in fold 0: left out of the mean, not zero
    assert ours.loc["0", "f1_average"] == pytest.approx((0.5 + 1.0 + 0.0 + 0.25) / 4)
    mean = ours.loc["mean"]
    assert mean.f1_positive == pytest.approx(0.6) and mean.f1_positive_std == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert mean.f1_surprise == pytest.approx(0.6) and np.isnan(mean.f1_surprise_std)
    assert mean.accuracy_repression == pytest.approx(50.0)
    # fold averages (50+100+75+25+50)/5 = 60 and (70+50+25+75+100)/5 = 64
    assert mean.accuracy_average == pytest.approx(62.0) and mean.f1_average == pytest.approx((0.4375 + 0.35) / 2)
    assert mean.n_test == 16
    reported = table[table.source == "reported"].set_index("method")
    assert reported.loc["SMILE-VLM", "f1_repression"] == 0.8093
    assert reported.loc["SMILE-VLM", "accuracy_average"] == 86.61
    assert reported.loc["Front [56]", "setting"] == "front view"
    assert reported.loc["Left [56]", "accuracy_others"] == 69.07


def test_multilabel_single_view_rows(tmp_path):
    single = {"yaw 30": _multilabel_metrics([1.0, 0.0, 0.5, 0.5, 0.5], [1.0, 0.5, 0.5, 0.5, 0.5])}
    evals = [_multilabel_eval(tmp_path, 0, [0.5] * 5, [0.5] * 5, single)]
    table = build_table({"name": "none", "view_rows": True}, evals)
    row = table[(table.method == "smile_vlm (yaw 30 only)") & (table.fold == "0")].iloc[0]
    assert row.f1_positive == 1.0 and row.accuracy_positive == 100.0
    assert row.f1_average == pytest.approx(0.5) and row.accuracy_average == pytest.approx(60.0)


def test_mixing_label_modes_or_broken_json_names_the_file(tmp_path):
    single = _eval(tmp_path, "smile_vlm", 0, 0.5, 0.5, 0.5)
    multi = _multilabel_eval(tmp_path, 1, [0.5] * 5, [0.5] * 5)
    with pytest.raises(ScanError, match="ml_1.json: multi_label=True"):
        build_table({"name": "none"}, [single, multi])
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ScanError, match="broken.json: unreadable evaluation JSON"):
        build_table({"name": "none"}, [broken])


def test_summary_page_has_means_first_reported_marks_and_collapsed_folds(tmp_path):
    evals = [_eval(tmp_path, "smile_vlm", k, accuracy, 0.5, 0.5) for k, accuracy in [(0, 0.5), (1, 1.0)]]
    single = tmp_path / "tables" / "bu4dfe.csv"
    write_table({"name": "bu4dfe", "prompts_source": "pseudo"}, evals, single)
    multi = tmp_path / "tables" / "4dme.csv"
    write_table({"name": "4dme"}, [_multilabel_eval(tmp_path, 0, [0.5] * 5, [0.5] * 5)], multi)
    ablation = tmp_path / "tables" / "ablation.csv"
    ablation.write_text("dataset,variant,accuracy_mean,n_folds\nbu4dfe,smile_vlm,75.0,2\n")

    text = summary_markdown([single, multi, ablation], tmp_path / "summary.md", {"bu4dfe": "synthetic"})
    assert (tmp_path / "summary.md").read_text() == text
    assert "synthetic default data" in text.split("## ")[0]
    bu4dfe = text.split("## Table III: BU-4DFE")[1].split("## ")[0]
    assert "`bu4dfe.csv`; data: synthetic; prompts source: pseudo" in bu4dfe
    lines = bu4dfe.splitlines()
    mean_line = ("| smile_vlm | class prompts (labels) | random | ours | 2 | 75.00 ± 35.36 | 0.5000 ± 0.0000 "
                 "| 50.00 ± 0.00 |")
    reported_line = f"| SMILE-VLM |  |  | 10-CV, full sequence; *{REPORTED_MARK}* |  | 96.57 |  |  |"
    details = lines.index("<details><summary>per-fold rows</summary>")
    assert lines.index(mean_line) < lines.index(reported_line) < details  # means, then the paper, then folds
    assert "| smile_vlm | 1 | 100.00 | 0.5000 | 50.00 |" in lines

    table_v = text.split("## Table V")[1].split("## ")[0]
    assert "prompts source: label (each sample's class chooses its prompt" in table_v
    assert "| SMILE-VLM |  |  | multi-view; *reported on the real dataset* |  | 0.7612 | 0.8458 | 0.8126 | 0.8093 | " \
           "0.7824 | 0.8023 |" in table_v
    assert "| smile_vlm | ours | 1 | 81.62" not in table_v
    assert ("| smile_vlm | class prompts (labels) | random | ours | 1 | 50.00 | 50.00 | 50.00 | 50.00 | 50.00 "
            "| 50.00 | 50.00 |") in table_v
    assert "Label sets decided by: above_uniform at logit scale 14.29 (training 1/tau, tau = 0.07)." in table_v
    assert "| bu4dfe | smile_vlm | 75.00 | 2 |" in text


# --------------------------------------------------------------------------- README result blocks

REPO = Path(__file__).resolve().parents[1]


def _readme_tables(tmp_path):
    evals = [_eval(tmp_path, "smile_vlm", k, a, 0.5, 0.5) for k, a in [(0, 0.5), (1, 1.0)]]
    evals += [_eval(tmp_path, "facet_vlm_prompt", k, a, 0.25, 0.5) for k, a in [(0, 0.25), (1, 0.75)]]
    tables = tmp_path / "results" / "tables"
    write_table({"name": "bu4dfe"}, evals, tables / "bu4dfe.csv")
    write_table({"name": "4dme"}, [_multilabel_eval(tmp_path, 0, [0.5] * 5, [0.5] * 5)], tables / "4dme.csv")
    return tables / "bu4dfe.csv", tables / "4dme.csv"


def test_readme_result_block_is_what_the_command_writes(tmp_path, monkeypatch):
    from smile_vlm.cli import main
    from smile_vlm.summary import PLACEHOLDER, README_COMMAND, block_is_intact, readme_block, readme_blocks

    monkeypatch.chdir(tmp_path)
    bu4dfe, fourdme = (p.relative_to(tmp_path) for p in _readme_tables(tmp_path))
    placeholder = PLACEHOLDER.format(command=README_COMMAND, table=bu4dfe.as_posix())
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\ntext before\n\n<!-- results:bu4dfe start -->\n{placeholder}<!-- results:bu4dfe end -->\n"
                      "\n<!-- results:4dme start -->\n<!-- results:4dme end -->\n\ntext after\n")
    assert main(["readme-results", "--tables", str(bu4dfe), str(fourdme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\ntext before\n\n") and text.endswith("\ntext after\n")
    blocks = readme_blocks(text)
    assert blocks == {"bu4dfe": readme_block(bu4dfe), "4dme": readme_block(fourdme)}
    body = blocks["bu4dfe"]
    assert f"`{README_COMMAND} --tables results/tables/bu4dfe.csv` from `results/tables/bu4dfe.csv`" in body
    assert ("| smile_vlm | class prompts (labels) | random | label | 2 | 75.00 ± 35.36 | 0.5000 ± 0.0000 "
            "| 50.00 ± 0.00 |") in body
    assert "| facet_vlm_prompt | class prompts (labels) | random | label | 2 | 50.00 ± 35.36 |" in body
    assert "96.57" not in body  # our rows only; the paper's live in the table and the summary
    assert "Label sets decided by: above_uniform at logit scale 14.29" in blocks["4dme"]
    assert block_is_intact(body)
    # up to date: --check passes and nothing is rewritten
    assert main(["readme-results", "--check", "--tables", str(bu4dfe)]) == 0

    # a hand-edited number breaks the block's digest, and --check reports it
    readme.write_text(text.replace("75.00 ± 35.36", "95.00 ± 35.36"))
    assert not block_is_intact(readme_blocks(readme.read_text())["bu4dfe"])
    assert main(["readme-results", "--check", "--tables", str(bu4dfe)]) == 2
    # a new table changes the block on the next run
    write_table({"name": "bu4dfe"}, [_eval(tmp_path, "smile_vlm", 0, 0.5, 0.5, 0.5)], bu4dfe)
    assert main(["readme-results", "--tables", str(bu4dfe)]) == 0
    assert "| smile_vlm | class prompts (labels) | random | label | 1 | 50.00 |" in readme.read_text()


def test_readme_without_the_tables_markers_is_refused(tmp_path):
    from smile_vlm.summary import update_readme

    bu4dfe, _ = _readme_tables(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(ScanError, match="no block '<!-- results:bu4dfe start -->'"):
        update_readme(readme, [bu4dfe])
    assert readme.read_text() == "# no markers\n"


def test_repository_readme_blocks_are_written_by_the_command(tmp_path, monkeypatch):
    """Every result block of README.md is the command's placeholder or its output, untouched by
    hand, and exactly what the command writes for a table holding the block's figures.

    The table is built here from the block's own rows, never read from ``results/``: what a user
    has run on their machine (whose figures may differ in the last fold) must not fail the suite.
    """
    from smile_vlm.summary import PLACEHOLDER, README_COMMAND, block_is_intact, cited_table, readme_blocks

    blocks = readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert "bu4dfe" in blocks
    for name, body in blocks.items():
        table = cited_table(body)
        if table is None:
            assert body == PLACEHOLDER.format(command=README_COMMAND, table=f"results/tables/{name}.csv"), name
            continue
        assert block_is_intact(body), f"README block {name} was edited by hand; run {README_COMMAND}"
        rebuilt = _block_from_its_figures(body, table, tmp_path / name, monkeypatch)
        digest = body.index("<!-- table sha256")
        assert rebuilt[:digest] == body[:digest], f"README block {name} is not what {README_COMMAND} writes"


_BLOCK_HEADERS = {"zero-shot accuracy (%)": "accuracy", "macro-F1": "macro_f1", "average F1": "f1_average",
                  "average accuracy (%)": "accuracy_average", "linear probe (%)": "linear_probe_accuracy"}


def _block_from_its_figures(body: str, table: str, folder: Path, monkeypatch) -> str:
    """readme_block of a table written in ``folder`` (at the path ``table`` the block cites) whose
    mean rows, fold counts and label-set decision are the ones the block prints."""
    from smile_vlm.summary import readme_block

    rows = [line.strip("|").split(" | ") for line in body.splitlines() if line.startswith("| ")]
    header, rows = [cell.strip() for cell in rows[0]], [[cell.strip() for cell in row] for row in rows[1:]]
    decision = [line for line in body.splitlines() if line.startswith("Label sets decided by: ")]
    records = []
    for row in rows:
        cells = dict(zip(header, row))
        common = {"source": "ours", "method": cells["variant"], "supervision": cells["supervision"],
                  "init": cells["init"], "prompts": cells["prompts"]}
        if decision:
            common["decision"] = decision[0][len("Label sets decided by: "):-1]
        mean = {**common, "fold": "mean"}
        for title, column in _BLOCK_HEADERS.items():
            if title in cells:
                value, _, std = cells[title].partition(" ± ")
                mean[column], mean[f"{column}_std"] = float(value), float(std) if std else np.nan
        records.append(mean)
        records += [{**common, "fold": str(k)} for k in range(int(cells["folds"]))]
    (folder / table).parent.mkdir(parents=True)
    pd.DataFrame(records).to_csv(folder / table, index=False)
    monkeypatch.chdir(folder)
    return readme_block(table)


def test_rows_say_which_wise_ft_alpha_they_were_evaluated_at(tmp_path):
    init = "results/pretrain/default/vision.pt"
    evals = [_eval(tmp_path, "plain", 0, 0.5, 0.5, 0.5, init=init, wise_alpha=1.0),
             _eval(tmp_path, "mixed", 0, 0.75, 0.5, 0.5, init=init, wise_alpha=0.5),
             _eval(tmp_path, "older", 0, 0.25, 0.5, 0.5)]  # a JSON from before WiSE-FT: plain fine-tuning
    out = tmp_path / "tables" / "bu4dfe.csv"
    write_table({"name": "bu4dfe"}, evals, out)
    table = pd.read_csv(out, dtype={"fold": str})
    ours = table[table["source"] == "ours"]
    assert ours.set_index(["method", "fold"])["wise_alpha"].to_dict() == {
        ("plain", "0"): 1, ("plain", "mean"): 1, ("mixed", "0"): 0.5, ("mixed", "mean"): 0.5,
        ("older", "0"): 1, ("older", "mean"): 1}
    lines = summary_markdown([out], tmp_path / "summary.md").splitlines()
    assert any(line.startswith(f"| mixed | class prompts (labels) | {init}, WiSE-FT alpha 0.5 | ours |") for line in lines)
    assert any(line.startswith(f"| plain | class prompts (labels) | {init} | ours |") for line in lines)
