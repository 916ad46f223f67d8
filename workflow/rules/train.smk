# ---- folds and training: subject-independent folds, one training job per (variant, fold) -----


checkpoint folds:
    input:
        store=experiment_store,
        train_store=train_store,
    output:
        "results/{experiment}/folds.csv",
    params:
        protocol=lambda w: as_json(protocol_settings(w.experiment)),
    log:
        "logs/folds/{experiment}.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "{SMILE_VLM} folds --store {input.store} --train-store {input.train_store}"
        " --protocol {params.protocol:q} --out {output} > {log} 2>&1"


rule text_bank:
    """Every prompt embedded once by the frozen text encoder; training and evaluation jobs load
    these embeddings instead of the text tower."""
    input:
        prompt_file_input,
    output:
        TEXT_BANK,
    params:
        settings=as_json(text_bank_settings()),
    log:
        "logs/text_bank.log",
    conda:
        "../../envs/train.yaml"
    shell:
        "{SMILE_VLM} text-bank --settings {params.settings:q} --out {output} > {log} 2>&1"


def train_launcher(wildcards, resources):
    """Several GPUs train one fold with DDP under torchrun; otherwise a single process.

    The GPU count is the rule's `gpu` resource, so a profile's set-resources decides both what
    the scheduler grants and how many processes torchrun starts.
    """
    gpus = int(resources.get("gpu", 0))
    if gpus > 1:
        return f"{shlex.quote(sys.executable)} -m torch.distributed.run --standalone --nproc-per-node {gpus} -m smile_vlm.train"
    return f"{SMILE_VLM} train"


rule train:
    input:
        store=train_store,
        folds="results/{experiment}/folds.csv",
        text_bank=TEXT_BANK,
    output:
        "results/{experiment}/models/{variant}/fold{k}/model.pt",
    params:
        launcher=train_launcher,
        out_dir=lambda w: f"results/{w.experiment}/models/{w.variant}/fold{w.k}",
        variant=lambda w: as_json(variant_settings(w.variant)),
        settings=lambda w: as_json(train_settings(w)),
    threads: lambda w: config["train"]["threads"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=lambda w: int(config["train"]["gpus"]),
    log:
        "logs/train/{experiment}/{variant}/fold{k}.log",
    conda:
        "../../envs/train.yaml"
    message:
        "Training {wildcards.variant} on {wildcards.experiment}, fold {wildcards.k}"
    shell:
        "{params.launcher} --store {input.store} --folds {input.folds} --k {wildcards.k}"
        " --variant {params.variant:q} --settings {params.settings:q}"
        " --text-bank {input.text_bank} --out {params.out_dir:q} --threads {threads} > {log} 2>&1"
