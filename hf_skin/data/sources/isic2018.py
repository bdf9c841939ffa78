"""The ISIC 2018 Task 3 training download of HAM10000: its images, a one-hot ground truth and the lesion groupings;
no age, sex or localization."""

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ...labels import DX_TYPE_LABELS
from ..checks import check_ids_present, check_metadata_rows, is_missing, refuse_repeated_rows
from .folder import RawSource, read_csv

logger = logging.getLogger(__name__)

ISIC_IMAGE_FOLDER = "ISIC2018_Task3_Training_Input"
ISIC_GROUND_TRUTH = "ISIC2018_Task3_Training_GroundTruth.csv"
ISIC_GROUPINGS = "ISIC2018_Task3_Training_LesionGroupings.csv"
ISIC_DX_COLUMNS = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
# diagnosis_confirm_type -> dx_type: the ISIC files spell out what HAM10000_metadata.csv abbreviates.
ISIC_DX_TYPES = {
    "histopathology": "histo",
    "serial imaging showing no change": "follow_up",
    "single image expert consensus": "consensus",
    "confocal microscopy with consensus dermoscopy": "confocal",
}


def find_isic_file(root: Path, name: str) -> Path | None:
    """`root/name`, else `root/*/name` (the download's zips unpack into a folder of their own), else None."""
    if (root / name).is_file():
        return root / name
    return next((path for path in sorted(root.glob(f"*/{name}")) if path.is_file()), None)


def isic_source(root: Path) -> RawSource:
    """The download folder `root`, which holds the ground truth file (in it or one folder down)."""
    ground_truth = find_isic_file(root, ISIC_GROUND_TRUTH)
    groupings = find_isic_file(root, ISIC_GROUPINGS)
    if groupings is None:
        raise FileNotFoundError(
            f"{root} holds the ISIC 2018 Task 3 ground truth ({ground_truth.relative_to(root)}) but no "
            f"{ISIC_GROUPINGS} (in it or one folder down): that file gives each image's lesion_id, and a split "
            "without lesion ids would put views of one lesion in two splits (a leak). Download the Task 3 "
            "'Training Lesion Groupings' from https://challenge.isic-archive.com/data/#2018 into this folder"
        )
    logger.warning(
        "%s: the ISIC 2018 Task 3 files have no age, sex or localization: every row gets age None and sex and "
        "localization 'unknown', so a multi-input model trained on this data gets no metadata",
        root,
    )
    return RawSource(
        "isic2018",
        root,
        (ground_truth, groupings),
        lambda contents: read_isic(ground_truth, contents[0], groupings, contents[1]),
        note="; no age, sex or localization (ISIC 2018 Task 3 files)",
    )


def read_isic(truth_path: Path, truth_bytes: bytes, groupings_path: Path, groupings_bytes: bytes) -> list[dict]:
    """The ISIC 2018 Task 3 ground truth (one-hot `dx`) joined with its lesion groupings (`lesion_id`, `dx_type`),
    as rows of `read_metadata`'s shape (age None, sex and localization "unknown"); row i is line i + 2 of the
    ground truth file."""
    _, truth = read_csv(truth_path, truth_bytes, ["image", *ISIC_DX_COLUMNS], "the ISIC 2018 Task 3 columns")
    group_columns = ["image", "lesion_id", "diagnosis_confirm_type"]
    _, groups = read_csv(groupings_path, groupings_bytes, group_columns, "the ISIC 2018 Task 3 columns")

    def where_in(rows: list[dict]) -> Callable[[int], str]:
        return lambda row: f"line {row + 2}" + (f" (image {rows[row]['image']})" if rows[row]["image"] else "")

    check_ids_present("image", [row["image"] for row in truth], where_in(truth), str(truth_path))
    check_ids_present("image", [row["image"] for row in groups], where_in(groups), str(groupings_path))
    check_ids_present("lesion_id", [row["lesion_id"] for row in groups], where_in(groups), str(groupings_path))

    dx, not_one_hot = [], []
    for i, row in enumerate(truth):
        values = [_float_or_none(row[column]) for column in ISIC_DX_COLUMNS]
        hot = [column for column, value in zip(ISIC_DX_COLUMNS, values) if value == 1.0]
        if len(hot) == 1 and all(value in (0.0, 1.0) for value in values):
            dx.append(ISIC_DX_COLUMNS[hot[0]])
        else:
            not_one_hot.append(i)
            dx.append("")
    if not_one_hot:
        i = not_one_hot[0]
        values = ", ".join(f"{column}={truth[i][column] or '(empty)'}" for column in ISIC_DX_COLUMNS)
        raise ValueError(
            f"{truth_path}, {where_in(truth)(i)}: the diagnosis is not one-hot ({values}; {len(not_one_hot)} such "
            "row(s)): each row needs 1.0 in exactly one of the columns "
            f"{', '.join(ISIC_DX_COLUMNS)} and 0.0 in the others. Fix the ground truth file"
        )

    refuse_repeated_rows(groups, "image", groupings_path, "image")
    group_of = {row["image"]: row for row in groups}
    ungrouped = [row for row in truth if row["image"] not in group_of]
    if ungrouped:
        shown = ", ".join(row["image"] for row in ungrouped[:3]) + (", ..." if len(ungrouped) > 3 else "")
        raise ValueError(
            f"{groupings_path} has no row for {shown}, listed in {truth_path.name} ({len(ungrouped)} such image(s)): "
            "without their lesion_id these images cannot be split by lesion. Use the groupings file of the same "
            "(training) download"
        )
    extra = len(group_of) - len({row["image"] for row in truth})
    if extra > 0:
        logger.info("%s: %d row(s) for images not in %s are ignored", groupings_path, extra, truth_path.name)

    unknown: Counter = Counter()

    def dx_type(confirm: str) -> str:
        name = confirm.lower()
        if is_missing(name) or name in DX_TYPE_LABELS:
            return name
        if name not in ISIC_DX_TYPES:
            unknown[confirm] += 1
        return ISIC_DX_TYPES.get(name, "unknown")

    raw = [
        {
            "image_id": row["image"],
            "lesion_id": group_of[row["image"]]["lesion_id"],
            "dx": dx[i],
            "dx_type": dx_type(group_of[row["image"]]["diagnosis_confirm_type"]),
            "age": "",
            "sex": "",
            "localization": "",
        }
        for i, row in enumerate(truth)
    ]
    if unknown:
        logger.warning(
            "%s: diagnosis_confirm_type %s is none of %s: dx_type 'unknown' for these %d row(s)",
            groupings_path,
            ", ".join(f"{name!r} ({count} row(s))" for name, count in unknown.most_common()),
            ", ".join(map(repr, ISIC_DX_TYPES)),
            sum(unknown.values()),
        )
    return check_metadata_rows(truth_path, raw)


def _float_or_none(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None
