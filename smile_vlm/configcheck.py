"""Cross-checks of a workflow config that its JSON schema cannot express.

The schema checks each key on its own (types, enums, unknown keys). These checks follow the
references between sections: an experiment's dataset, classes, variants and prompt set, the
ablation's experiments and variants, per-variant encoder overrides, and the dataset roots the
requested targets read. The Snakefile runs them before any job starts and stops with one line per
problem, so a typo never costs a preprocessing run.

Plain data in, plain strings out; imports neither torch nor pandas (the Snakefile imports this
module while it builds the DAG).
"""

from __future__ import annotations

import functools
import re
import sys
from importlib import resources
from pathlib import Path, PurePosixPath

import yaml

from smile_vlm.readers.names import CLASSES
from smile_vlm.settings import prompt_file, resolve_variant, section_keys, variant_vision

# The train, evaluate and figure rules put variant names into file names (wildcard `variant`).
VARIANT_NAME = re.compile(r"[A-Za-z0-9_]+")
# results/<name>/ folders that are no experiment's.
RESERVED_NAMES = {"tables", "figures", "ablation", "synthetic", "predict"}
MODELS = ("smile_vlm", "facet_vlm")


def refuse(problems: list[str]) -> None:
    """Print one ``config error:`` line per problem on stderr and exit (status 1); no-op when empty."""
    if problems:
        for problem in problems:
            print(f"config error: {problem}", file=sys.stderr)
        raise SystemExit(1)


# ---- the schema -----------------------------------------------------------------------------
def schema_problems(config: dict, schema_path: str | Path) -> list[str]:
    """Every schema violation, one line each, named by its dotted key path.

    Snakemake's own ``validate`` stops at the first error and prints the whole schema section;
    this runs first so that a user sees every typo at once, in one line each.
    """
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{_dotted(e.absolute_path)}: {_short(e.message)}" for e in errors]


def _dotted(path) -> str:
    return ".".join(str(part) for part in path) or "(top level)"


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


# ---- shared with the rules ------------------------------------------------------------------
def dataset_classes(config: dict, dataset: str) -> list[str]:
    """The dataset's label set; a user's BP4D task map may add classes of its own."""
    classes = list(CLASSES[dataset])
    for name in (config["datasets"][dataset].get("task_classes") or {}).values():
        if name not in classes:
            classes.append(name)
    return classes


def is_synthetic(config: dict, dataset: str) -> bool:
    """Whether the dataset's root is the synthetic generator's output (a rule writes it)."""
    root = config["datasets"][dataset]["root"]
    return Path(root) == Path(config["synthetic"]["root"]) / dataset


# ---- cross-references -----------------------------------------------------------------------
def config_problems(config: dict) -> list[str]:
    """Every broken cross-reference of a schema-valid config, one line each (empty: none)."""
    problems: list[str] = []
    # what a variant's vision: may override: the keys of the schema's encoders.vision
    problems += _variant_problems(config, set(section_keys("encoders", "vision")))
    problems += _prompt_file_problems(config)
    for name, experiment in config["experiments"].items():
        problems += _experiment_problems(config, name, experiment)
    problems += _ablation_problems(config)
    problems += _encoder_problems(config)
    return problems


def _known(names) -> str:
    return ", ".join(sorted(names)) or "none"


def _variant_problems(config: dict, vision_keys: set[str]) -> list[str]:
    problems = []
    for name in config["variants"]:
        where = f"variants.{name}"
        if not VARIANT_NAME.fullmatch(name):
            problems.append(f"{where}: a variant name may hold only letters, digits and _ (it names folders)")
        try:
            resolved = resolve_variant(config["variants"], name)
        except (KeyError, ValueError) as err:
            message = err.args[0] if err.args else str(err)
            problems.append(f"{where}.base: {message}")
            continue
        if resolved.get("model") not in MODELS:
            problems.append(f"{where}: no model (set model: {' or '.join(MODELS)}, or base: another variant)")
        unknown = set(resolved.get("vision") or {}) - vision_keys
        if unknown:
            problems.append(f"{where}.vision: unknown keys {_known(unknown)} (encoders.vision has {_known(vision_keys)})")
        if float(resolved.get("replay") or 0) > 0:
            vision = variant_vision(resolved, config.get("encoders") or {})
            problems += [f"{where}.replay: {p}" for p in replay_problems({**resolved, "vision": vision})]
    return problems


def replay_problems(variant: dict) -> list[str]:
    """What a variant with replay (smile_vlm.replay) lacks: the pretraining it replays is the one
    its folds start from (its vision spec's init, encoders.vision merged in), and that
    pretraining trains SMILE-VLM's vision side."""
    problems = []
    if not (variant.get("vision") or {}).get("init"):
        problems.append("replays the corpus of the pretraining the folds start from; give the variant "
                        "vision: {init: <vision.pt>} (or set encoders.vision.init), or set replay: 0")
    if variant.get("model") != "smile_vlm":
        problems.append("the pretraining trains SMILE-VLM's vision side; use model: smile_vlm or set replay: 0")
    return problems


def _experiment_problems(config: dict, name: str, experiment: dict) -> list[str]:
    where = f"experiments.{name}"
    problems = []
    if name in RESERVED_NAMES or name in ("text_bank", "all"):
        problems.append(f"{where}: the name is taken by the workflow's own outputs; rename the experiment")
    elif not VARIANT_NAME.fullmatch(name):
        problems.append(f"{where}: an experiment name may hold only letters, digits and _ (it names files)")
    datasets = config["datasets"]
    for key in ("dataset", "train_dataset"):
        if key in experiment and experiment[key] not in datasets:
            problems.append(f"{where}.{key}: unknown dataset {experiment[key]!r} (known: {_known(datasets)})")
    for variant in experiment["variants"]:
        if variant not in config["variants"]:
            problems.append(f"{where}.variants: unknown variant {variant!r} (known: {_known(config['variants'])})")
    known_classes = experiment["classes"]
    if experiment["dataset"] in datasets:
        known = dataset_classes(config, experiment["dataset"])
        problems += _class_problems(f"{where}.classes", experiment["classes"], known, experiment["dataset"])
        known_classes = [c for c in experiment["classes"] if c in known]
    train_dataset = experiment.get("train_dataset", experiment["dataset"])
    train_classes = experiment["protocol"].get("train_classes")
    if train_classes and train_dataset in datasets:
        problems += _class_problems(f"{where}.protocol.train_classes", train_classes,
                                    dataset_classes(config, train_dataset), train_dataset)
    if "train_dataset" in experiment and experiment["protocol"].get("split") != "cross":
        problems.append(f"{where}: train_dataset needs protocol.split: cross")
    problems += _prompt_problems(config, where, known_classes)  # an unknown class is reported once
    reported = experiment.get("reported")
    if reported is not None and reported not in _reported_keys():
        problems.append(f"{where}.reported: no {reported!r} in smile_vlm/configs/reported.yaml "
                        f"(known: {_known(_reported_keys())})")
    return problems


def _class_problems(where: str, classes: list[str], known: list[str], dataset: str) -> list[str]:
    problems = [f"{where}: {c!r} is not a class of {dataset} (its classes: {', '.join(known)})"
                for c in classes if c not in known]
    duplicates = sorted({c for c in classes if classes.count(c) > 1})
    if duplicates:
        problems.append(f"{where}: listed twice: {', '.join(duplicates)}")
    return problems


def _prompt_file_problems(config: dict) -> list[str]:
    path = prompt_file(config["prompts"]["name"])
    if _prompt_classes(str(path)) is None:
        return [f"prompts.name: no prompt file {path} with a 'classes' mapping "
                "(a name under smile_vlm/prompts/ or a .yaml path)"]
    return []


def _prompt_problems(config: dict, where: str, classes: list[str]) -> list[str]:
    name = config["prompts"]["name"]
    prompt_classes = _prompt_classes(str(prompt_file(name)))
    if prompt_classes is None:  # reported once, by _prompt_file_problems
        return []
    missing = [c for c in classes if c not in prompt_classes]
    if missing:
        return [f"{where}.classes: prompt set {name!r} has no prompts for {', '.join(missing)}"]
    return []


@functools.lru_cache(maxsize=None)
def _prompt_classes(path: str) -> frozenset[str] | None:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return None
    table = data.get("classes") if isinstance(data, dict) else None
    return frozenset(table) if isinstance(table, dict) else None


@functools.lru_cache(maxsize=1)
def _reported_keys() -> frozenset[str]:
    text = resources.files("smile_vlm").joinpath("configs/reported.yaml").read_text(encoding="utf-8")
    return frozenset(yaml.safe_load(text) or {})


def _ablation_problems(config: dict) -> list[str]:
    ablation = config["ablation"]
    problems = [f"ablation.experiments: unknown experiment {e!r} (known: {_known(config['experiments'])})"
                for e in ablation["experiments"] if e not in config["experiments"]]
    problems += [f"ablation.variants: unknown variant {v!r} (known: {_known(config['variants'])})"
                 for v in ablation["variants"] if v not in config["variants"]]
    return problems


def _encoder_problems(config: dict) -> list[str]:
    problems = []
    for side in ("text", "vision"):
        encoder = config["encoders"][side]
        if encoder.get("kind") == "hf_clip" and not encoder.get("name_or_path"):
            problems.append(f"encoders.{side}: kind hf_clip needs name_or_path (a hub id or a local CLIP folder)")
    return problems


# ---- dataset roots of the requested targets -------------------------------------------------
def experiment_datasets(config: dict, name: str) -> set[str]:
    experiment = config["experiments"][name]
    return {experiment["dataset"], experiment.get("train_dataset", experiment["dataset"])}


def datasets_for_targets(config: dict, targets, workdir: str | Path = ".") -> set[str]:
    """Datasets whose raw data the requested targets are built from.

    No target (the default rule `all`), a rule name or an unknown path counts as every
    experiment's datasets: a root check may ask for too much, never for too little.
    """
    experiments = config["experiments"]
    everything = set().union(*(experiment_datasets(config, e) for e in experiments)) if experiments else set()
    ablation = set().union(*(experiment_datasets(config, e) for e in config["ablation"]["experiments"]
                             if e in experiments))
    needed: set[str] = set()
    for target in targets or ["all"]:
        parts = _results_parts(target, workdir)
        if parts is None:
            return everything
        if not parts or parts[0] == "text_bank.pt" or parts[0] == "synthetic":
            continue
        head, stem = parts[0], PurePosixPath(parts[-1]).stem
        if head == "tables" and stem in experiments:
            needed |= experiment_datasets(config, stem)
        elif head in ("tables", "figures", "ablation"):
            name = stem.removeprefix("ablation_")
            if head != "tables" and name in experiments:
                needed |= experiment_datasets(config, name)
            elif stem in ("ablation", "gains_heatmap"):
                needed |= ablation
            else:
                return everything
        elif head in config["datasets"] or head in experiments:
            needed |= {head} if head in config["datasets"] else set()
            needed |= experiment_datasets(config, head) if head in experiments else set()
        else:
            return everything
    return needed


def _results_parts(target: str, workdir: str | Path) -> tuple[str, ...] | None:
    """The path of a target below results/, or None when the target is not a results/ path."""
    path = Path(target)
    if path.is_absolute():
        try:
            path = path.relative_to(Path(workdir).resolve())
        except ValueError:
            return None
    parts = PurePosixPath(path.as_posix()).parts
    if len(parts) < 2 or parts[0] != "results":
        return None
    return parts[1:]


def root_problems(config: dict, datasets, workdir: str | Path = ".") -> list[str]:
    """Missing raw data of the given datasets, one line each. Synthetic roots are fine: the
    workflow writes them, unless the generator itself needs a folder that is missing."""
    problems = []
    workdir = Path(workdir)
    synthetic_needed = False
    for dataset in sorted(datasets):
        entry = config["datasets"][dataset]
        if is_synthetic(config, dataset):
            synthetic_needed = True
            continue
        root = workdir / entry["root"]
        if not root.is_dir():
            what = "is a file, not a folder" if root.exists() else "does not exist"
            problems.append(f"datasets.{dataset}.root: {entry['root']} {what} "
                            f"(point it at the raw {dataset} folder, or at {config['synthetic']['root']}/{dataset})")
            continue
        for key in ("annotations", "mesh_dir"):
            if key in entry and not (root / entry[key]).exists():
                problems.append(f"datasets.{dataset}.{key}: {root / entry[key]} does not exist")
    synthetic = config["synthetic"]
    if synthetic_needed and synthetic.get("face_source") == "ict":
        ict_dir = synthetic.get("ict_dir")
        if not ict_dir or not (workdir / ict_dir).is_dir():
            problems.append(f"synthetic.ict_dir: {ict_dir} is not a folder (face_source: ict needs "
                            "ICT-FaceKit's FaceXModel/ folder)")
    return problems
