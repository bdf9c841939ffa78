"""Configuration of the study's small CNN, and of the stronger CNNs one config away from it."""

from transformers import PreTrainedConfig


class SkinCNNConfig(PreTrainedConfig):
    r"""
    Configuration of [`SkinCNNForImageClassification`]. The defaults reproduce the study's network: a 32×32 RGB
    input, conv 32 → conv 64 (3×3, ReLU, 50% dropout after each), flattened into a dense 7-way classifier.

    Args:
        num_channels (`int`, *optional*, defaults to 3):
            Channels of the input images.
        image_size (`int`, *optional*, defaults to 32):
            Side of the square input; the saved image processor resizes to it.
        hidden_sizes (`list[int]`, *optional*, defaults to `[32, 64]`):
            Output channels of each stage; its length is the network's depth.
        convs_per_stage (`int`, *optional*, defaults to 1):
            3×3 convolutions in each stage.
        kernel_size (`int`, *optional*, defaults to 3):
            Convolution kernel size ("same" padding).
        normalization (`str`, *optional*, defaults to `"none"`):
            `"none"` (the study) or `"batch"` (batch norm after each convolution).
        downsample (`bool`, *optional*, defaults to `False`):
            2×2 max-pooling at the end of each stage. The study used none.
        dropout (`float`, *optional*, defaults to 0.5):
            Dropout after each stage, as in the study.
        head (`str`, *optional*, defaults to `"flatten"`):
            `"flatten"` (the study: all activations into the dense layer) or `"avg"` (global average pooling).
        classifier_dropout (`float`, *optional*, defaults to 0.0):
            Dropout before the classifier.
    """

    model_type = "hf_skin_cnn"

    def __init__(
        self,
        num_channels: int = 3,
        image_size: int = 32,
        hidden_sizes: list[int] | tuple[int, ...] = (32, 64),
        convs_per_stage: int = 1,
        kernel_size: int = 3,
        normalization: str = "none",
        downsample: bool = False,
        dropout: float = 0.5,
        head: str = "flatten",
        classifier_dropout: float = 0.0,
        **kwargs,
    ):
        if normalization not in ("none", "batch"):
            raise ValueError(f"normalization must be 'none' or 'batch', got {normalization!r}")
        if head not in ("flatten", "avg"):
            raise ValueError(f"head must be 'flatten' or 'avg', got {head!r}")
        self.num_channels = num_channels
        self.image_size = image_size
        self.hidden_sizes = list(hidden_sizes)
        self.convs_per_stage = convs_per_stage
        self.kernel_size = kernel_size
        self.normalization = normalization
        self.downsample = downsample
        self.dropout = dropout
        self.head = head
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)


__all__ = ["SkinCNNConfig"]
