"""The study's small CNN as a `transformers` model (any depth/width through its config)."""

from collections.abc import Iterable
from contextlib import contextmanager, nullcontext
from itertools import islice

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndNoAttention, ImageClassifierOutput
from transformers.utils import can_return_tuple

from .configuration_cnn import SkinCNNConfig


@contextmanager
def _running_statistics_kept(modules: Iterable[nn.Module]):
    """Batch norm layers among `modules` normalise with the batch's statistics as usual inside the block, but leave
    their running statistics and batch count as they were."""
    norms = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(norm.momentum, norm.num_batches_tracked.clone()) for norm in norms]
    # Momentum 0 keeps the running statistics exactly (running * 1 + batch * 0). Copying the old values back afterwards
    # instead would change, in place, tensors that reentrant checkpointing's backward pass still holds.
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        for norm, (momentum, count) in zip(norms, saved):
            norm.momentum = momentum
            norm.num_batches_tracked.copy_(count)


class SkinCNNPreTrainedModel(PreTrainedModel):
    config_class = SkinCNNConfig
    base_model_prefix = "cnn"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
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
    """The convolutional feature extractor, returning what transformers' vision models return: the last stage's
    (B, hidden_sizes[-1], h, w) feature map as `last_hidden_state`, and the (B, num_features) features the classifier
    takes, pooled by `config.head`, as `pooler_output`."""

    # Switched on by `gradient_checkpointing_enable()` (transformers' `_set_gradient_checkpointing` sets it, with
    # `_gradient_checkpointing_func`): each stage then keeps only its input and is recomputed in the backward pass.
    gradient_checkpointing = False

    def __init__(self, config: SkinCNNConfig):
        super().__init__(config)
        # One flat nn.Sequential, so that the weights keep the names every checkpoint has (`encoder.{i}.weight`);
        # `stage_ends` marks where each stage's layers end in it.
        layers, channels, self.stage_ends = [], config.num_channels, []
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
            self.stage_ends.append(len(layers))
        self.encoder = nn.Sequential(*layers)
        side = config.image_size // (2 ** len(config.hidden_sizes)) if config.downsample else config.image_size
        self.num_features = channels * side * side if config.head == "flatten" else channels
        self.post_init()

    def _checkpointed(self, stage: list[nn.Module], hidden_state: torch.Tensor) -> torch.Tensor:
        calls = []

        def run(hidden_state: torch.Tensor) -> torch.Tensor:
            # The backward pass's recomputation sees the batch a second time: batch norm must not count it twice.
            with _running_statistics_kept(stage) if calls else nullcontext():
                calls.append(None)
                for layer in stage:
                    hidden_state = layer(hidden_state)
            return hidden_state

        if not hidden_state.requires_grad:
            # Reentrant checkpointing (`use_reentrant=True`) would give the first stage, whose input is the pixels, no
            # gradients at all.
            hidden_state = hidden_state.detach().requires_grad_()
        return self._gradient_checkpointing_func(run, hidden_state)

    @can_return_tuple
    def forward(
        self, pixel_values: torch.Tensor, output_hidden_states: bool | None = None
    ) -> BaseModelOutputWithPoolingAndNoAttention:
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        hidden_state, hidden_states, start = pixel_values, (), 0
        for end in self.stage_ends:
            stage = list(islice(self.encoder, start, end))
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_state = self._checkpointed(stage, hidden_state)
            else:
                for layer in stage:
                    hidden_state = layer(hidden_state)
            hidden_states, start = hidden_states + (hidden_state,), end
        pooled = hidden_state.mean(dim=(2, 3)) if self.config.head == "avg" else hidden_state.flatten(1)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden_state,  # (B, hidden_sizes[-1], h, w)
            pooler_output=pooled,  # (B, num_features)
            hidden_states=hidden_states if output_hidden_states else None,  # each stage's output
        )


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
        features = self.cnn(pixel_values, return_dict=True).pooler_output
        logits = self.classifier(self.dropout(features))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits, labels)
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=(features,) if output_hidden_states else None
        )


__all__ = ["SkinCNNModel", "SkinCNNForImageClassification", "SkinCNNPreTrainedModel"]
