"""A random one-layer CLIP saved as a Hugging Face folder, for tests of the real loading path.

Imported as a plain module (``from tiny_clip import save_tiny_clip``). The tokenizer is built by
`write_clip_tokenizer_files` from OpenAI's merges file when one is given, otherwise from a few
merges in the same format: the towers do not need the real vocabulary, and its file is not a
dependency of this package.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

TINY_MERGES = ["h a", "p p", "a n", "f a", "c e</w>", "ha pp", "fa ce</w>", "s a"]


def tiny_merges_file(root: Path) -> Path:
    merges_gz = root / "bpe.txt.gz"
    with gzip.open(merges_gz, "wt", encoding="utf-8") as stream:
        stream.write("\n".join(["tiny bpe for tests", *TINY_MERGES]))  # no empty last line: no empty merge
    return merges_gz


def save_tiny_clip(root: Path, merges_gz: Path | None = None, name: str = "clip"):
    """Returns (model, tokenizer, folder) of a random CLIP saved with save_pretrained."""
    import transformers

    from smile_vlm.models.encoders import write_clip_tokenizer_files

    root.mkdir(parents=True, exist_ok=True)
    vocab, merges = write_clip_tokenizer_files(merges_gz or tiny_merges_file(root), root / "tokenizer")
    tokenizer = transformers.CLIPTokenizer(str(vocab), str(merges))
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=16)
    torch.manual_seed(0)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    folder = root / name
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.eval(), tokenizer, folder
