# ---- report: tables per experiment, the paper's figures, one summary page --------------------


rule table:
    input:
        eval_jsons,
    output:
        report(
            "results/tables/{experiment}.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
    params:
        experiment=lambda w: as_json(jobs.table_settings(config, w.experiment)),
    log:
        "logs/table/{experiment}.log",
    benchmark:
        "logs/benchmarks/table/{experiment}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} table --experiment {params.experiment:q} --out {output}"
        " --evals {input} > {log} 2>&1"


rule ablation_table:
    input:
        ablation_evals,
    output:
        "results/ablation/{experiment}.csv",
    params:
        experiment=lambda w: as_json(jobs.ablation_table_settings(config, w.experiment)),
    log:
        "logs/ablation_table/{experiment}.log",
    benchmark:
        "logs/benchmarks/ablation_table/{experiment}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} table --experiment {params.experiment:q} --out {output}"
        " --evals {input} > {log} 2>&1"


rule ablation_figure:
    input:
        "results/ablation/{experiment}.csv",
    output:
        report(
            "results/figures/ablation_{experiment}.png",
            caption="../report/ablation.rst",
            category="Ablations",
        ),
    log:
        "logs/figure/ablation_{experiment}.log",
    benchmark:
        "logs/benchmarks/ablation_figure/{experiment}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} figure ablation --inputs {input} --out {output} > {log} 2>&1"


rule ablation_summary:
    input:
        expand("results/ablation/{experiment}.csv", experiment=config["ablation"]["experiments"]),
    output:
        table="results/tables/ablation.csv",
        heatmap=report(
            "results/figures/gains_heatmap.png",
            caption="../report/gains_heatmap.rst",
            category="Ablations",
        ),
    log:
        "logs/figure/ablation_summary.log",
    benchmark:
        "logs/benchmarks/ablation_summary/ablation_summary.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "({SMILE_VLM} figure ablation --inputs {input} --out $(mktemp --suffix .png)"
        " --table-out {output.table} &&"
        " {SMILE_VLM} figure gains --inputs {input} --out {output.heatmap}) > {log} 2>&1"


rule experiment_figure:
    input:
        eval_jsons,
    output:
        report(
            "results/{experiment}/figures/{kind}.png",
            caption="../report/experiment_figure.rst",
            category="Figures",
            subcategory="{experiment}",
        ),
    wildcard_constraints:
        kind="confusion|view_weights",
    params:
        kind=lambda w: w.kind.replace("_", "-"),
    log:
        "logs/figure/{experiment}_{kind}.log",
    benchmark:
        "logs/benchmarks/experiment_figure/{experiment}_{kind}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} figure {params.kind} --inputs {input} --out {output} > {log} 2>&1"


rule training_curves:
    input:
        train_logs,
    output:
        report(
            "results/{experiment}/figures/training_curves_{variant}.png",
            caption="../report/training_curves.rst",
            category="Figures",
            subcategory="{experiment}",
        ),
    params:
        logs=lambda w, input: [str(Path(p).parent / "train_log.jsonl") for p in input],
    log:
        "logs/figure/{experiment}_{variant}_curves.log",
    benchmark:
        "logs/benchmarks/training_curves/{experiment}_{variant}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} figure training-curves --inputs {params.logs} --out {output} > {log} 2>&1"


rule summary:
    input:
        tables=expand("results/tables/{experiment}.csv", experiment=EXPERIMENTS),
        ablation="results/tables/ablation.csv",
    output:
        report("results/tables/summary.md", caption="../report/summary.rst", category="Tables"),
    params:
        sources=as_json(jobs.data_sources(config)),
    log:
        "logs/summary.log",
    benchmark:
        "logs/benchmarks/summary/summary.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} summary --data-sources {params.sources:q} --out {output}"
        " --tables {input.tables} {input.ablation} > {log} 2>&1"
