"""The models: SMILE-VLM (smile.py), FACET-VLM (facet.py), their shared pieces (common.py), the
text and vision towers (encoders.py) and the factory (factory.py)."""

from smile_vlm.models.factory import build_model, image_input, load_trained, model_variant

__all__ = ["build_model", "image_input", "load_trained", "model_variant"]
