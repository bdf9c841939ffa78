"""The study's small CNN as a `transformers` model (any depth/width through its config)."""

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_cnn import SkinCNNConfig


class SkinCNNPreTrainedModel(PreTrainedModel):
    config_class = SkinCNNConfig
    base_model_prefix = "cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # The loss is a per-batch mean: the Trainer must scale it for gradient accumulation itself.
    accepts_loss_kwargs = False

    def _init_weights(self, module):
        # torch's own defaults (Kaiming) suit a ReLU CNN trained from scratch better than N(0, 0.02).
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=5**0.5)
            init.uniform_(module.bias, -(module.in_features**-0.5), module.in_features**-0.5)
        elif isinstance(module, nn.BatchNorm2d):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            init.zeros_(module.running_mean)
            init.ones_(module.running_var)
            init.zeros_(module.num_batches_tracked)


class SkinCNNModel(SkinCNNPreTrainedModel):
    """The convolutional feature extractor: (B, C, H, W) -> (B, features) pooled by `config.head`."""

    def __init__(self, config: SkinCNNConfig):
        super().__init__(config)
        layers, channels = [], config.num_channels
        for width in config.hidden_sizes:
            for _ in range(config.convs_per_stage):
                layers.append(nn.Conv2d(channels, width, config.kernel_size, padding=config.kernel_size // 2))
                if config.normalization == "batch":
                    layers.append(nn.BatchNorm2d(width))
                layers.append(nn.ReLU())
                channels = width
            if config.downsample:
                layers.append(nn.MaxPool2d(2))
            layers.append(nn.Dropout(config.dropout))
        self.encoder = nn.Sequential(*layers)
        side = config.image_size // (2 ** len(config.hidden_sizes)) if config.downsample else config.image_size
        self.num_features = channels * side * side if config.head == "flatten" else channels
        self.post_init()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(pixel_values)  # (B, hidden_sizes[-1], h, w)
        if self.config.head == "avg":
            return hidden.mean(dim=(2, 3))
        return hidden.flatten(1)


class SkinCNNForImageClassification(SkinCNNPreTrainedModel):
    def __init__(self, config: SkinCNNConfig):
        super().__init__(config)
        self.cnn = SkinCNNModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(self.cnn.num_features, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> ImageClassifierOutput:
        features = self.cnn(pixel_values)
        logits = self.classifier(self.dropout(features))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=(features,) if output_hidden_states else None
        )


__all__ = ["SkinCNNModel", "SkinCNNForImageClassification", "SkinCNNPreTrainedModel"]
