"""hf-skin: fine-tune and evaluate skin-lesion classifiers on HAM10000, the Hugging Face way."""

__version__ = "0.1.0"

from .data import DX_LABELS, load_ham10000  # noqa: E402
from .models import SkinCNNConfig, SkinCNNForImageClassification, build_model  # noqa: E402

__all__ = [
    "DX_LABELS",
    "SkinCNNConfig",
    "SkinCNNForImageClassification",
    "__version__",
    "build_model",
    "load_ham10000",
]
