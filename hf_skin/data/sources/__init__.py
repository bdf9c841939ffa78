"""One module per kind of HAM10000 source: the raw download folder (`ham10000`), the ISIC 2018 Task 3 download
(`isic2018`), both built by `folder`; and a dataset already saved (`saved`: save_to_disk, parquet, Hub)."""

from .folder import IMAGE_EXTENSIONS, MASK_FOLDER, MASK_SUFFIX, RawSource, load_raw_folder
from .ham10000 import METADATA_FILENAME, ham10000_source, read_metadata
from .isic2018 import (
    ISIC_DX_COLUMNS,
    ISIC_DX_TYPES,
    ISIC_GROUND_TRUTH,
    ISIC_GROUPINGS,
    ISIC_IMAGE_FOLDER,
    find_isic_file,
    isic_source,
)
from .saved import SAVED_DATASET_FILES, load_dataset_source, normalize_given_splits

__all__ = [
    "IMAGE_EXTENSIONS",
    "ISIC_DX_COLUMNS",
    "ISIC_DX_TYPES",
    "ISIC_GROUND_TRUTH",
    "ISIC_GROUPINGS",
    "ISIC_IMAGE_FOLDER",
    "MASK_FOLDER",
    "MASK_SUFFIX",
    "METADATA_FILENAME",
    "SAVED_DATASET_FILES",
    "RawSource",
    "find_isic_file",
    "ham10000_source",
    "isic_source",
    "load_dataset_source",
    "load_raw_folder",
    "normalize_given_splits",
    "read_metadata",
]
