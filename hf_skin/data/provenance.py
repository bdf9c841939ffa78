"""What a model learned from: `describe_data` says what a data source really is (synthetic lesions, a HAM10000
folder, the ISIC 2018 layout, a prepared copy, a Hub dataset), training records it in the checkpoint's config
(`training_data`), and `training_data_sentence` is the one sentence that every page, card and report says about it.

A synthetic folder says so itself (`SYNTHETIC_MARKER`, written by `hf_skin.synthetic`), and a prepared copy carries
the description of its source (`SOURCE_RECORD`, written by `hf_skin.preparation`): prepared, synthetic data is
still known as synthetic.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .loading import resolve_source

# Written by `hf_skin.synthetic.make_synthetic_ham10000` into its folder: the generator, its seed, the lesions.
SYNTHETIC_MARKER = "hf_skin_synthetic.json"
# Written by `hf_skin.preparation.prepare_dataset` into its output folder: `describe_data` of what it prepared.
SOURCE_RECORD = "hf_skin_source.json"
DATA_KINDS = ("synthetic", "ham10000", "isic2018", "saved", "parquet", "hub")
NOT_RECORDED = "Where this model's training data came from is not recorded, so what it learned from is unknown."
SYNTHETIC_SENTENCE = (
    "This model is a demo: it learned from synthetic lesions drawn by hf-skin, not from photos of real skin, and it "
    "knows nothing about real lesions — its answer on a real photo means nothing."
)
# What `load_ham10000`'s `resolve_source` calls a kind of source -> what a description calls it.
_KINDS = {"isic": "isic2018", "disk": "saved", "parquet": "parquet", "hub": "hub"}


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):  # absent, unreadable or damaged: nothing recorded
        return None
    return value if isinstance(value, dict) else None


def describe_data(source: str | os.PathLike) -> dict:
    """What the data at `source` really is, as training records it (`config.training_data`).

    Args:
        source (`str` or `os.PathLike`): anything `hf_skin.data.load_ham10000` reads (a local folder or file, or a Hub
            dataset id).

    Returns:
        `dict`: `kind` (one of `DATA_KINDS`: `"synthetic"` for a folder written by `hf_skin.synthetic`, `"ham10000"`
        for another folder in the HAM10000 download's layout, `"isic2018"`, `"saved"` for a `save_to_disk` folder,
        `"parquet"`, `"hub"`), `location` (the absolute, resolved path, or the Hub id) and `synthetic` (`bool`); for a
        prepared copy that recorded its source (`SOURCE_RECORD`), `prepared_from`: that source's own
        description, whose `synthetic` the copy's is.

    Raises:
        `FileNotFoundError` or `ValueError`: as `resolve_source`, for a source that is none of these.
    """
    kind, location = resolve_source(source)
    if kind == "hub":
        return {"kind": "hub", "location": str(location), "synthetic": False}
    path = Path(location).resolve()
    if kind == "raw":
        synthetic = (path / SYNTHETIC_MARKER).is_file()
        return {"kind": "synthetic" if synthetic else "ham10000", "location": str(path), "synthetic": synthetic}
    description = {"kind": _KINDS[kind], "location": str(path), "synthetic": False}
    prepared_from = _read_json((path if path.is_dir() else path.parent) / SOURCE_RECORD)
    if kind in ("disk", "parquet") and prepared_from is not None:
        description.update(synthetic=is_synthetic(prepared_from), prepared_from=prepared_from)
    return description


def for_publication(description: dict) -> dict:
    """`describe_data`'s dict as a checkpoint carries it into the world (its config, an export's spec): a local
    folder by its name only, never its absolute path (which names the user's home and folders)."""
    published = dict(description)
    if published.get("kind") != "hub" and published.get("location"):
        published["location"] = Path(str(published["location"])).name
    if published.get("prepared_from"):
        published["prepared_from"] = for_publication(published["prepared_from"])
    return published


def is_synthetic(training_data: dict | None) -> bool:
    """Whether a model with this `training_data` (`describe_data`'s dict, `None` when not recorded) learned from
    synthetic lesions, directly or through a prepared copy of them."""
    return bool(training_data and training_data.get("synthetic"))


def training_data_sentence(training_data: dict | None) -> str:
    """The one plain sentence that pages, cards and reports say about what a model learned from.

    Args:
        training_data (`dict`, *optional*): `describe_data`'s dict, as the checkpoint's config or an export's spec
            records it (`SkinClassifier.training_data`); `None` for a model that did not record it.

    Returns:
        `str`: one sentence. Synthetic data: the model is a demo that knows nothing about real skin lesions. Otherwise
        the data by name (HAM10000 only where it is HAM10000's layout), a local folder by its name only.
    """
    if not training_data:
        return NOT_RECORDED
    if is_synthetic(training_data):
        return SYNTHETIC_SENTENCE
    kind, location = training_data.get("kind"), training_data.get("location")
    if kind == "ham10000":
        return (
            "This model learned from HAM10000, dermatoscope images of 7 kinds of pigmented skin lesions from two "
            "clinics (Vienna and Queensland)."
        )
    if kind == "isic2018":
        return (
            "This model learned from the ISIC 2018 Task 3 training set (HAM10000's dermatoscope images of 7 kinds of "
            "pigmented skin lesions, without age, sex or body site)."
        )
    if kind == "hub":
        return f"This model learned from the Hub dataset {location}, in HAM10000's format (7 kinds of skin lesions)."
    if training_data.get("prepared_from"):
        sentence = training_data_sentence(training_data["prepared_from"])
        return sentence.replace("learned from", "learned from a prepared copy of", 1)
    return f"This model learned from a prepared dataset in HAM10000's format ({Path(str(location)).name})."
