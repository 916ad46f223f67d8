# ---- evaluate: zero-shot (and linear-probe) metrics of one trained fold ----------------------


rule evaluate:
    input:
        store=experiment_store,
        train_store=train_store,
        folds="results/{experiment}/folds.csv",
        model="results/{experiment}/models/{variant}/fold{k}/model.pt",
        text_bank=TEXT_BANK,
    output:
        "results/{experiment}/eval/{variant}/fold{k}.json",
    params:
        variant=lambda w: as_json(jobs.variant_settings(config, w.variant)),
        settings=lambda w: as_json(jobs.evaluate_settings(config, w.experiment)),
    threads: lambda w: config["train"]["threads"]
    log:
        "logs/evaluate/{experiment}/{variant}/fold{k}.log",
    benchmark:
        "logs/benchmarks/evaluate/{experiment}/{variant}/fold{k}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} evaluate --store {input.store} --folds {input.folds} --k {wildcards.k}"
        " --model {input.model} --variant {params.variant:q} --settings {params.settings:q}"
        " --train-store {input.train_store} --text-bank {input.text_bank} --out {output}"
        " --threads {threads} > {log} 2>&1"
