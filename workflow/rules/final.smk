# ---- final: an experiment's deployable model (every subject of the protocol trains, same recipe)
#      and its model card (what it was trained on, and the cross-validated accuracy of the recipe)


rule final_model:
    input:
        store=train_store,
        folds="results/{experiment}/folds.csv",
        text_bank=TEXT_BANK,
        pretrained=vision_init_input,
    output:
        "results/{experiment}/final/{variant}/model.pt",
    params:
        launcher=torch_launcher("final-model"),
        out_dir=lambda w: f"results/{w.experiment}/final/{w.variant}",
        variant=lambda w: as_json(jobs.variant_settings(config, w.variant)),
        settings=lambda w: as_json(jobs.evaluate_settings(config, w.experiment)),
    threads: lambda w: config["train"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: int(config["train"]["gpus"]),
    log:
        "logs/final/{experiment}/{variant}.log",
    benchmark:
        "logs/benchmarks/final_model/{experiment}/{variant}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Training the deployable {wildcards.variant} of {wildcards.experiment} on every subject"
    shell:
        "{params.launcher} --store {input.store} --folds {input.folds}"
        " --variant {params.variant:q} --settings {params.settings:q}"
        " --text-bank {input.text_bank} --out {params.out_dir:q} --threads {threads} > {log} 2>&1"


rule model_card:
    input:
        model="results/{experiment}/final/{variant}/model.pt",
        table="results/tables/{experiment}.csv",
    output:
        "results/{experiment}/final/{variant}/model_card.md",
    log:
        "logs/model_card/{experiment}/{variant}.log",
    benchmark:
        "logs/benchmarks/model_card/{experiment}/{variant}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} model-card --model {input.model} --table {input.table}"
        " --experiment {wildcards.experiment} --out {output} > {log} 2>&1"
