"""The HAM10000 download folder (Harvard Dataverse / Kaggle layout): `HAM10000_metadata.csv`, `<image_id>.jpg`
anywhere below it, masks in `HAM10000_segmentations_lesion_tschandl/`."""

import logging
from pathlib import Path

from ...labels import METADATA_COLUMNS
from ..checks import check_metadata_rows
from .folder import RawSource, read_csv

logger = logging.getLogger(__name__)

METADATA_FILENAME = "HAM10000_metadata.csv"


def ham10000_source(root: Path) -> RawSource:
    """The download folder `root`, which holds `HAM10000_metadata.csv`."""
    csv_path = root / METADATA_FILENAME
    return RawSource("ham10000", root, (csv_path,), lambda contents: read_metadata(csv_path, contents[0]))


def read_metadata(csv_path: Path, csv_bytes: bytes) -> list[dict]:
    """Parse and check HAM10000_metadata.csv: one dict per row with canonical label ids and age."""
    header, raw = read_csv(csv_path, csv_bytes, METADATA_COLUMNS, "the HAM10000 columns")
    extra = [column for column in header if column not in METADATA_COLUMNS]
    if extra:
        logger.info("%s: ignoring column(s) %s", csv_path, ", ".join(extra))
    return check_metadata_rows(csv_path, raw)
