# ---- pretraining: the vision encoder learns FACS captions of generated faces, once -------------
#      (results/pretrain/<name>/vision.pt; encoders.vision.init starts every fold from it)


def pretrain_names():
    return ["default", *config["pretrain"]["variants"]]


def pretrain_settings(name):
    """What the pretrained weights depend on: the pretrain section (with the named variant's
    overrides), the views and render mode, the text tower that embeds the captions and the vision
    architecture. No train/evaluate/experiment setting, so changing those never reruns it."""
    section = config["pretrain"]
    pretrain = {k: v for k, v in section.items() if k not in ("threads", "variants")}
    pretrain.update(section["variants"].get(name) or {})
    render = {k: config["render"][k] for k in ("yaws", "pitches", "mode", "radius_mm", "backend")}
    vision = {k: v for k, v in config["encoders"]["vision"].items() if k != "init"}
    return {"pretrain": pretrain, "render": render, "encoders": {"text": config["encoders"]["text"], "vision": vision}}


rule pretrain:
    output:
        "results/pretrain/{pretrain}/vision.pt",
    wildcard_constraints:
        pretrain=_alternatives(pretrain_names()),
    params:
        settings=lambda w: as_json(pretrain_settings(w.pretrain)),
    threads: lambda w: config["pretrain"]["threads"]
    resources:
        mem_mb=8000,
        runtime=60,
    log:
        "logs/pretrain/{pretrain}.log",
    benchmark:
        "logs/benchmarks/pretrain/{pretrain}.tsv"
    conda:
        "../../envs/smile-vlm.yaml"
    message:
        "Pretraining the vision encoder on FACS-captioned generated faces ({wildcards.pretrain})"
    shell:
        "{SMILE_VLM} pretrain --settings {params.settings:q} --out {output} --threads {threads} > {log} 2>&1"
