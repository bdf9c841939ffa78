"""The shape of HAM10000 as hf-skin holds it: the split names, the canonical `datasets.Features`, and reading a
column (label ids as their words, images per diagnosis). The vocabulary itself is `hf_skin.labels`'."""

from collections import Counter

from datasets import ClassLabel, Dataset, Features, Image, Value

from ..labels import DX_LABELS, DX_TYPE_LABELS, LOCALIZATION_LABELS, SEX_LABELS

SPLITS = ("train", "validation", "test")


def ham10000_features(with_mask: bool = False) -> Features:
    """The canonical `datasets.Features` of HAM10000, whatever the source.

    Args:
        with_mask (`bool`, *optional*, defaults to `False`):
            Add a `mask` image column (the published binary lesion segmentation).

    Returns:
        `Features`: `image`, `image_id`, `lesion_id`, `dx`, `dx_type`, `age`, `sex`, `localization` (and `mask`).
        Label ids follow `DX_LABELS`, `DX_TYPE_LABELS`, `SEX_LABELS` and `LOCALIZATION_LABELS`; a missing age is
        `None`, never 0.
    """
    features = {
        "image": Image(),
        "image_id": Value("string"),
        "lesion_id": Value("string"),
        "dx": ClassLabel(names=DX_LABELS),
        "dx_type": ClassLabel(names=DX_TYPE_LABELS),
        "age": Value("float32"),
        "sex": ClassLabel(names=SEX_LABELS),
        "localization": ClassLabel(names=LOCALIZATION_LABELS),
    }
    if with_mask:
        features["mask"] = Image()
    return Features(features)


def column_values(dataset: Dataset, name: str) -> list:
    """One column as a list, honouring any row selection, without touching (or decoding) the other columns."""
    return dataset.select_columns([name]).with_format(None)[name][:]


def label_words(dataset: Dataset, name: str) -> list:
    """A label column's values as words: a `ClassLabel`'s ids by its own names, other columns (strings) as they are."""
    values = column_values(dataset, name)
    feature = dataset.features[name]
    if isinstance(feature, ClassLabel):
        values = [feature.int2str(label) for label in values]
    return values


def class_counts(dataset: Dataset) -> dict[str, int]:
    """Images per diagnosis, in `DX_LABELS` order (zeros included), for cards and logs.

    Args:
        dataset (`Dataset`): has a `dx` column, of label ids (`ClassLabel`, in any order of names) or of words.

    Returns:
        `dict[str, int]`: diagnosis -> images; a diagnosis outside `DX_LABELS` comes after them, sorted.
    """
    counts = Counter(label_words(dataset, "dx"))
    return {label: counts.pop(label, 0) for label in DX_LABELS} | dict(sorted(counts.items()))
