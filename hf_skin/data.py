"""HAM10000 as a `datasets.DatasetDict`: raw download folder, Hub repo or parquet/saved folder, lesion-grouped splits."""

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
METADATA_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
