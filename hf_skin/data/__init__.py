"""HAM10000 as a `datasets.DatasetDict` (raw download folder, ISIC 2018 layout, Hub repo, parquet, saved folder),
lesion-grouped.

`loading` (`load_ham10000`), `sources/` (one module per kind of source), `cache` (the raw-folder build cache),
`checks` (image and row checks), `splits` (lesion-grouped splits, `SplitArguments`), `schema` (the features).
The vocabulary is `hf_skin.labels`', re-exported here for `from hf_skin.data import DX_LABELS`.
"""

from ..labels import (
    DX_LABELS,
    DX_NAMES,
    DX_TYPE_LABELS,
    LABEL_VOCABULARIES,
    LOCALIZATION_LABELS,
    MALIGNANT_DX,
    MAX_AGE,
    METADATA_COLUMNS,
    MIN_AGE,
    SEX_LABELS,
    is_valid_age,
)
from .checks import verify_images
from .loading import DEFAULT_DATASET, load_ham10000, resolve_source
from .provenance import (
    SOURCE_RECORD,
    SYNTHETIC_MARKER,
    describe_data,
    for_publication,
    is_synthetic,
    training_data_sentence,
)
from .schema import SPLITS, class_counts, column_values, ham10000_features, label_words
from .sources import (
    IMAGE_EXTENSIONS,
    ISIC_DX_COLUMNS,
    ISIC_DX_TYPES,
    ISIC_GROUND_TRUTH,
    ISIC_GROUPINGS,
    ISIC_IMAGE_FOLDER,
    MASK_FOLDER,
    MASK_SUFFIX,
    METADATA_FILENAME,
)
from .splits import SPLIT_DEFAULTS, SplitArguments, lesion_grouped_split, shared_lesions

__all__ = [
    "DEFAULT_DATASET",
    "DX_LABELS",
    "DX_NAMES",
    "DX_TYPE_LABELS",
    "IMAGE_EXTENSIONS",
    "ISIC_DX_COLUMNS",
    "ISIC_DX_TYPES",
    "ISIC_GROUND_TRUTH",
    "ISIC_GROUPINGS",
    "ISIC_IMAGE_FOLDER",
    "LABEL_VOCABULARIES",
    "LOCALIZATION_LABELS",
    "MALIGNANT_DX",
    "MASK_FOLDER",
    "MASK_SUFFIX",
    "MAX_AGE",
    "METADATA_COLUMNS",
    "METADATA_FILENAME",
    "MIN_AGE",
    "SEX_LABELS",
    "SOURCE_RECORD",
    "SYNTHETIC_MARKER",
    "SPLITS",
    "SPLIT_DEFAULTS",
    "SplitArguments",
    "class_counts",
    "column_values",
    "describe_data",
    "for_publication",
    "ham10000_features",
    "is_synthetic",
    "is_valid_age",
    "label_words",
    "lesion_grouped_split",
    "load_ham10000",
    "resolve_source",
    "shared_lesions",
    "training_data_sentence",
    "verify_images",
]
