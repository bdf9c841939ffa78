"""A HAM10000-shaped raw folder of learnable synthetic lesions (the demo's data and the tests' fixture):
`python -m hf_skin.synthetic OUT_DIR`."""

from .generate import CLASS_COUNTS, FIRST_IMAGE_NUMBER, IMAGE_PREFIX, LESION_PREFIX, make_synthetic_ham10000

__all__ = ["CLASS_COUNTS", "FIRST_IMAGE_NUMBER", "IMAGE_PREFIX", "LESION_PREFIX", "make_synthetic_ham10000"]
