"""Configuration of the multi-input model: an image backbone plus a metadata encoder (age, sex, localization)."""

from transformers import AutoConfig, PreTrainedConfig

from .configuration_cnn import SkinCNNConfig

# The metadata a patient or clinician can give. dx_type (how the diagnosis was confirmed) is not among the defaults:
# it leaks the label (histopathology is done mostly on malignant lesions).
DEFAULT_METADATA_FIELDS = ("age", "sex", "localization")
CATEGORICAL_FIELDS = ("sex", "localization", "dx_type")


def backbone_config_from_dict(values: dict) -> PreTrainedConfig:
    """A backbone config from its dict; hf-skin's own CNN is resolved here so remote-code loading needs no registry."""
    values = dict(values)
    model_type = values.pop("model_type")
    values.pop("transformers_version", None)
    if model_type == SkinCNNConfig.model_type:
        return SkinCNNConfig(**values)
    return AutoConfig.for_model(model_type, **values)


class SkinMultiInputConfig(PreTrainedConfig):
    r"""
    Configuration of [`SkinMultiInputForImageClassification`].

    Args:
        backbone_config (`PreTrainedConfig` or `dict`, *optional*):
            The image backbone's config: hf-skin's CNN (the default, the study's multi-input CNN), ResNet, ViT, or any
            `AutoModel` vision model.
        metadata_fields (`list[str]`, *optional*, defaults to `["age", "sex", "localization"]`):
            Which metadata the model takes. `"dx_type"` may be added but leaks the label.
        vocabularies (`dict[str, list[str]]`, *optional*):
            Categories of each categorical field, `unknown` included; set by `build_model` from HAM10000's.
        categorical_encoding (`str`, *optional*, defaults to `"embedding"`):
            `"embedding"` (learned, `embedding_dim` each) or `"one_hot"`.
        embedding_dim (`int`, *optional*, defaults to 8):
            Size of each categorical embedding.
        metadata_hidden_size (`int`, *optional*, defaults to 32):
            Width of the metadata encoder's output.
        fusion (`str`, *optional*, defaults to `"concat"`):
            `"concat"` (image features and metadata concatenated, then an MLP) or `"film"` (the metadata scales and
            shifts the image features).
        fusion_hidden_size (`int`, *optional*, defaults to 256):
            Hidden width of the fusion MLP.
        fusion_dropout (`float`, *optional*, defaults to 0.3):
            Dropout in the fusion MLP.
    """

    model_type = "hf_skin_multi_input"

    def __init__(
        self,
        backbone_config: PreTrainedConfig | dict | None = None,
        metadata_fields: list[str] | tuple[str, ...] = DEFAULT_METADATA_FIELDS,
        vocabularies: dict[str, list[str]] | None = None,
        categorical_encoding: str = "embedding",
        embedding_dim: int = 8,
        metadata_hidden_size: int = 32,
        fusion: str = "concat",
        fusion_hidden_size: int = 256,
        fusion_dropout: float = 0.3,
        **kwargs,
    ):
        if isinstance(backbone_config, dict):
            backbone_config = backbone_config_from_dict(backbone_config)
        self.backbone_config = backbone_config if backbone_config is not None else SkinCNNConfig()
        unknown = set(metadata_fields) - {"age", *CATEGORICAL_FIELDS}
        if unknown:
            raise ValueError(f"unknown metadata fields {sorted(unknown)}: use age, {', '.join(CATEGORICAL_FIELDS)}")
        self.metadata_fields = list(metadata_fields)
        self.vocabularies = {field: list(values) for field, values in (vocabularies or {}).items()}
        if categorical_encoding not in ("embedding", "one_hot"):
            raise ValueError(f"categorical_encoding must be 'embedding' or 'one_hot', got {categorical_encoding!r}")
        if fusion not in ("concat", "film"):
            raise ValueError(f"fusion must be 'concat' or 'film', got {fusion!r}")
        self.categorical_encoding = categorical_encoding
        self.embedding_dim = embedding_dim
        self.metadata_hidden_size = metadata_hidden_size
        self.fusion = fusion
        self.fusion_hidden_size = fusion_hidden_size
        self.fusion_dropout = fusion_dropout
        super().__init__(**kwargs)


__all__ = ["SkinMultiInputConfig"]
