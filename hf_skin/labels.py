"""HAM10000's vocabulary: the diagnoses and their names, the malignant set, the metadata categories, the age rule.

Every other module takes these from here; this module imports nothing of hf-skin's (and nothing heavy), so a page,
a card or an exported model's runtime can use it without torch.
"""

from __future__ import annotations

import math

# Canonical label order: label ids are identical whatever the source (never sorted from the data).
DX_LABELS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
DX_NAMES = {
    "akiec": "Actinic keratosis / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesion",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevus",
    "vasc": "Vascular lesion",
}
DX_PLURAL = {
    "akiec": "actinic keratoses",
    "bcc": "basal cell carcinomas",
    "bkl": "benign keratoses",
    "df": "dermatofibromas",
    "mel": "melanomas",
    "nv": "moles (nevi)",
    "vasc": "vascular lesions",
}
MALIGNANT_DX = ("akiec", "bcc", "mel")
DX_TYPE_LABELS = ["histo", "follow_up", "consensus", "confocal", "unknown"]
SEX_LABELS = ["male", "female", "unknown"]
LOCALIZATION_LABELS = [
    "abdomen",
    "acral",
    "back",
    "chest",
    "ear",
    "face",
    "foot",
    "genital",
    "hand",
    "lower extremity",
    "neck",
    "scalp",
    "trunk",
    "upper extremity",
    "unknown",
]
# The categorical columns and their vocabularies (the order is the class-label ids').
LABEL_VOCABULARIES = {
    "dx": DX_LABELS,
    "dx_type": DX_TYPE_LABELS,
    "sex": SEX_LABELS,
    "localization": LOCALIZATION_LABELS,
}
METADATA_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]

# The age rule: a number of years from MIN_AGE to MAX_AGE; anything else (NaN, inf included) is not an age.
MIN_AGE, MAX_AGE = 0, 120


def is_valid_age(age: float) -> bool:
    """Whether a number is an age hf-skin accepts: finite and from `MIN_AGE` to `MAX_AGE` years (NaN is not)."""
    return not math.isnan(age) and MIN_AGE <= age <= MAX_AGE


def display_name(label: str) -> str:
    """`"Melanoma (mel)"`: a HAM10000 diagnosis code with its full name in front (other labels as they are)."""
    return f"{DX_NAMES[label]} ({label})" if label in DX_NAMES else label


def malignant_ids(label_names: list[str]) -> list[int]:
    """The ids of the malignant classes (`MALIGNANT_DX`) among a model's labels, in the model's order."""
    return [i for i, name in enumerate(label_names) if name in MALIGNANT_DX]


def melanoma_id(label_names: list[str]) -> int | None:
    """The id of melanoma among a model's labels, `None` when it has none."""
    return label_names.index("mel") if "mel" in label_names else None


# The dataset's paper: cited by every card and by the metric module.
HAM10000_CITATION = """@article{tschandl2018ham10000,
  title   = {The {HAM10000} dataset, a large collection of multi-source dermatoscopic images
             of common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}"""
