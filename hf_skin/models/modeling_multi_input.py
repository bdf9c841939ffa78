"""Multi-input model: any image backbone + a metadata encoder (age, sex, localization), fused into a 7-way head."""

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_multi_input import SkinMultiInputConfig
from .modeling_cnn import SkinCNNModel


def build_backbone(config) -> nn.Module:
    """A randomly initialised feature extractor for a backbone config (hf-skin's CNN or any `AutoModel`)."""
    if config.model_type == "hf_skin_cnn":
        return SkinCNNModel(config)
    try:  # ViT-like models carry a randomly initialised pooler that the CLS features below do not use
        return AutoModel.from_config(config, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(config)


def backbone_feature_size(backbone: nn.Module) -> int:
    """The width of the backbone's pooled features: `num_features` where the model states it (hf-skin's CNN, the
    timm model inside TimmWrapperModel), else what transformers' vision configs give (`hidden_size`,
    `hidden_sizes[-1]`)."""
    model = getattr(backbone, "timm_model", backbone)
    if hasattr(model, "num_features"):
        return model.num_features
    config = backbone.config
    return config.hidden_size if hasattr(config, "hidden_size") else config.hidden_sizes[-1]


class MetadataEncoder(nn.Module):
    """age (normalised, with a missing indicator) and categorical fields (embedded or one-hot) -> a vector."""

    def __init__(self, config: SkinMultiInputConfig):
        super().__init__()
        self.config = config
        self.categorical = [field for field in config.metadata_fields if field != "age"]
        missing = [field for field in self.categorical if field not in config.vocabularies]
        if missing:
            raise ValueError(f"config.vocabularies lacks {missing}: build the model with hf_skin.build_model")
        sizes = {field: len(config.vocabularies[field]) for field in self.categorical}
        if config.categorical_encoding == "embedding":
            self.embeddings = nn.ModuleDict({f: nn.Embedding(n, config.embedding_dim) for f, n in sizes.items()})
            width = len(sizes) * config.embedding_dim
        else:
            self.embeddings = None
            width = sum(sizes.values())
        width += 2 if "age" in config.metadata_fields else 0
        self.mlp = nn.Sequential(nn.Linear(width, config.metadata_hidden_size), nn.ReLU())

    def forward(self, batch_size: int, device: torch.device, **metadata: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if "age" in self.config.metadata_fields:
            age, age_missing = metadata.get("age"), metadata.get("age_missing")
            if age is None:  # not given at all: missing for every row
                age = torch.zeros(batch_size, device=device)
                age_missing = torch.ones(batch_size, device=device)
            parts += [age.float()[:, None], age_missing.float()[:, None]]
        for field in self.categorical:
            ids = metadata.get(field)
            if ids is None:
                ids = torch.full((batch_size,), self.config.vocabularies[field].index("unknown"), device=device)
            if self.embeddings is not None:
                parts.append(self.embeddings[field](ids))
            else:
                parts.append(nn.functional.one_hot(ids, len(self.config.vocabularies[field])).float())
        return self.mlp(torch.cat(parts, dim=1))


class SkinMultiInputPreTrainedModel(PreTrainedModel):
    config_class = SkinMultiInputConfig
    base_model_prefix = "multi_input"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The backbone holds all the layers worth checkpointing; `_set_gradient_checkpointing` hands the switch to it.
    supports_gradient_checkpointing = True
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # The backbone, a PreTrainedModel, is initialised by its own `_init_weights` (transformers dispatches it).
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            init.uniform_(module.bias, -(module.in_features**-0.5), module.in_features**-0.5)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=1.0)


class SkinMultiInputForImageClassification(SkinMultiInputPreTrainedModel):
    def __init__(self, config: SkinMultiInputConfig):
        super().__init__(config)
        self.backbone = build_backbone(config.backbone_config)
        self.metadata_encoder = MetadataEncoder(config)
        image_size, meta_size = backbone_feature_size(self.backbone), config.metadata_hidden_size
        if config.fusion == "film":
            self.film = nn.Linear(meta_size, 2 * image_size)
            fused = image_size
        else:
            fused = image_size + meta_size
        self.fusion = nn.Sequential(
            nn.Dropout(config.fusion_dropout),
            nn.Linear(fused, config.fusion_hidden_size),
            nn.ReLU(),
            nn.Dropout(config.fusion_dropout),
        )
        self.classifier = nn.Linear(config.fusion_hidden_size, config.num_labels)
        self.post_init()

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func: Callable = checkpoint, every_n_layers: int = 1
    ):
        # The backbone checkpoints its own way (ViT its layers, hf-skin's CNN its stages, timm models through timm):
        # the fusion layers after it are a few small ones, not worth recomputing.
        if self.backbone.supports_gradient_checkpointing:
            self.backbone._set_gradient_checkpointing(
                enable=enable, gradient_checkpointing_func=gradient_checkpointing_func, every_n_layers=every_n_layers
            )
        elif enable:
            raise ValueError(
                f"gradient checkpointing: this multi-input model's {type(self.backbone).__name__} backbone does not "
                "support it (its implementation has none); train without --gradient_checkpointing or over a backbone "
                "that does (cnn, vit, a timm model such as efficientnet-lite0)"
            )

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, features): a convolutional backbone's pooled features (hf-skin's CNN, ResNet, timm's),
        a transformer's CLS token."""
        out = self.backbone(pixel_values=pixel_values)
        hidden = out.last_hidden_state
        if hidden.ndim == 3:  # (B, tokens, hidden): classify from the CLS token, as ViTForImageClassification
            return hidden[:, 0]
        pooled = getattr(out, "pooler_output", None)
        return pooled.flatten(1) if pooled is not None else hidden.mean(dim=(2, 3))

    def forward(
        self,
        pixel_values: torch.Tensor,
        age: torch.Tensor | None = None,
        age_missing: torch.Tensor | None = None,
        sex: torch.Tensor | None = None,
        localization: torch.Tensor | None = None,
        dx_type: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput:
        """Metadata not given is treated as missing (age) or `unknown` (categorical), never as an error."""
        image = self.image_features(pixel_values)
        metadata = self.metadata_encoder(
            image.shape[0],
            image.device,
            age=age,
            age_missing=age_missing,
            sex=sex,
            localization=localization,
            dx_type=dx_type,
        )
        if self.config.fusion == "film":
            scale, shift = self.film(metadata).chunk(2, dim=1)
            fused = image * (1 + scale) + shift
        else:
            fused = torch.cat([image, metadata], dim=1)
        hidden = self.fusion(fused)
        logits = self.classifier(hidden)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=(hidden,) if output_hidden_states else None
        )


__all__ = ["SkinMultiInputForImageClassification", "SkinMultiInputPreTrainedModel"]
