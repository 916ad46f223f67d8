# ---- folds and training: subject-independent folds, one training job per (variant, fold) -----


checkpoint folds:
    input:
        store=experiment_store,
        train_store=train_store,
    output:
        "results/{experiment}/folds.csv",
    params:
        protocol=lambda w: as_json(jobs.protocol_settings(config, w.experiment)),
    log:
        "logs/folds/{experiment}.log",
    benchmark:
        "logs/benchmarks/folds/{experiment}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} folds --store {input.store} --train-store {input.train_store}"
        " --protocol {params.protocol:q} --out {output} > {log} 2>&1"


rule text_bank:
    """Every prompt embedded once by the frozen text encoder; training and evaluation jobs load
    these embeddings instead of the text tower."""
    input:
        jobs.prompt_inputs(config),
    output:
        TEXT_BANK,
    params:
        settings=as_json(jobs.text_bank_settings(config)),
        prompts_sha256=jobs.prompt_digest(config),  # a prompt set of the package: its content, not its path
    log:
        "logs/text_bank.log",
    benchmark:
        "logs/benchmarks/text_bank/text_bank.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    shell:
        "{SMILE_VLM} text-bank --settings {params.settings:q} --out {output} > {log} 2>&1"


rule train:
    input:
        store=train_store,
        folds="results/{experiment}/folds.csv",
        text_bank=TEXT_BANK,
        pretrained=vision_init_input,
    output:
        "results/{experiment}/models/{variant}/fold{k}/model.pt",
    params:
        launcher=torch_launcher("train"),
        out_dir=lambda w: f"results/{w.experiment}/models/{w.variant}/fold{w.k}",
        variant=lambda w: as_json(jobs.variant_settings(config, w.variant)),
        settings=lambda w: as_json(jobs.train_settings(config, w.experiment)),
    threads: lambda w: config["train"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: int(config["train"]["gpus"]),
        workers=lambda w: int(config["train"]["workers"]),  # DataLoader processes: speed only
    log:
        "logs/train/{experiment}/{variant}/fold{k}.log",
    benchmark:
        "logs/benchmarks/train/{experiment}/{variant}/fold{k}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Training {wildcards.variant} on {wildcards.experiment}, fold {wildcards.k}"
    shell:
        "{params.launcher} --store {input.store} --folds {input.folds} --k {wildcards.k}"
        " --variant {params.variant:q} --settings {params.settings:q}"
        " --text-bank {input.text_bank} --out {params.out_dir:q} --threads {threads}"
        " --workers {resources.workers} > {log} 2>&1"
