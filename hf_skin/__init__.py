"""hf-skin: fine-tune and evaluate skin-lesion classifiers on HAM10000, the Hugging Face way."""

__version__ = "0.1.0"
