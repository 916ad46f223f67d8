# ---- report: one table per experiment (our folds, mean ± std, the paper's reported rows) -----


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
        experiment=lambda w: as_json({"name": w.experiment, **experiment(w.experiment)}),
    log:
        "logs/table/{experiment}.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "{SMILE_VLM} table --experiment {params.experiment:q} --out {output}"
        " --evals {input} > {log} 2>&1"
