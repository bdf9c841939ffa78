"""A checkpoint, or a finished run, -> its export folder: the fp32 ONNX model checked against PyTorch, with
`quantize="int8"` the int8 model (`hf_skin.export.int8`), and the spec (`hf_skin.export.spec`)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..inference import EXPORT_SPEC, SkinClassifier
from ..processing import SkinProcessor, image_spec, pixel_grid, resolve_input_size
from .int8 import QUANTIZATION_CHOICES, export_int8
from .parity import compare_predictions, run_onnx
from .spec import FP32_FILE, INT8_FILE, METADATA_INPUTS, ExportError, export_spec, input_names, is_export

logger = logging.getLogger(__name__)

OPSET = 18


def export_fp32(classifier: SkinClassifier, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """`classifier`'s PyTorch model as one ONNX file: inputs `input_names(classifier)`, output `logits`, batch axis
    dynamic, image size fixed."""
    import torch

    names = input_names(classifier)
    model = classifier.model.eval()

    unknown = [name for name in names[1:] if name not in METADATA_INPUTS]
    if unknown:
        raise ExportError(f"the model reads metadata inputs {unknown} that the exporter does not know")

    class Logits(torch.nn.Module):
        """The model's logits alone, from its named inputs (the ONNX graph's input names)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, pixel_values, age=None, age_missing=None, sex=None, localization=None, dx_type=None):
            metadata = dict(age=age, age_missing=age_missing, sex=sex, localization=localization, dx_type=dx_type)
            given = {name: value for name, value in metadata.items() if value is not None}
            return self.model(pixel_values=pixel_values, **given).logits

    height, width = image_spec(classifier.image_processor)["input_size"]
    # An example batch of 2 (a batch of 1 would be specialised); metadata at valid values
    example = {"pixel_values": torch.randn(2, 3, height, width)}
    if len(names) > 1:
        encoded = classifier.processor.encode_metadata(2, age=[40, None], return_tensors="pt")
        example.update(encoded)
    batch = torch.export.Dim("batch", min=1, max=4096)
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(
            Logits().eval(),
            (),
            os.fspath(path),
            kwargs=example,
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={name: {0: batch} for name in example},
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def _file_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """`out_dir` if it is new, empty or an earlier export (which is replaced); anything else is refused."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file: give a folder for the export")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not is_export(out_dir):
        found = ", ".join(sorted(p.name for p in out_dir.iterdir())[:5])
        raise ExportError(
            f"{out_dir} exists and is not an hf-skin export (it holds {found}): give a new or empty folder, or an "
            "earlier export's folder to replace it"
        )
    return out_dir


def export_onnx(
    checkpoint: str | os.PathLike | SkinClassifier,
    out_dir: str | os.PathLike,
    quantize: str | None = None,
    calibration: list[dict[str, np.ndarray]] | None = None,
    validation: list[dict[str, np.ndarray]] | None = None,
    validation_labels: np.ndarray | None = None,
    source: str | None = None,
) -> dict[str, Any]:
    """Exports a checkpoint folder (or a loaded PyTorch `SkinClassifier`) to `out_dir`: `model.onnx`, with
    `quantize="int8"` also `model_int8.onnx` (calibrated on `calibration`, measured against fp32 on `validation`:
    lists of input batches as `SkinClassifier.model_inputs` makes them for an exported model; `export_int8`), and
    `hf_skin_export.json`.

    The fp32 model is checked against PyTorch on the validation inputs (or on random ones without them). Returns
    the spec."""
    if quantize not in (None, *QUANTIZATION_CHOICES):
        raise ExportError(f"quantize={quantize!r}: the choices are {', '.join(QUANTIZATION_CHOICES)} or none")
    if quantize and not (calibration and validation):
        raise ExportError("int8 quantisation needs calibration and validation images (export_run reads the run's)")
    out_dir = check_output_dir(out_dir)
    if isinstance(checkpoint, SkinClassifier):
        classifier = checkpoint
        source = source or "a SkinClassifier"
    else:
        path = Path(checkpoint)
        if not (path / "config.json").is_file():
            raise ExportError(f"{path} holds no config.json: give a checkpoint folder or a finished run's folder")
        classifier = SkinClassifier.from_pretrained(path)
        source = source or os.fspath(path)
    if classifier.is_onnx:
        raise ExportError(f"{source} is already an export: export the PyTorch checkpoint it came from")
    try:
        spec = export_spec(classifier)
    except ValueError as err:
        raise ExportError(f"{source} cannot be exported: {err}") from err
    spec["source"] = source

    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (EXPORT_SPEC, FP32_FILE, INT8_FILE):  # an earlier export: nothing of it may outlive this one
        (out_dir / name).unlink(missing_ok=True)
    fp32 = export_fp32(classifier, out_dir / FP32_FILE)
    spec["models"]["fp32"] = {**_file_entry(fp32), "parity": _parity(classifier, fp32, validation, validation_labels)}
    if quantize == "int8":
        int8 = out_dir / INT8_FILE
        report = export_int8(
            fp32, int8, calibration, validation, validation_labels, input_grid=pixel_grid(spec["image"])
        )
        spec["models"]["int8"] = {**_file_entry(int8), **report}
    (out_dir / EXPORT_SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def _parity(classifier, fp32: Path, validation, labels) -> dict[str, float]:
    """fp32 ONNX against PyTorch on the same inputs: the validation batches, or 8 random images."""
    import torch

    if not validation:
        rng = np.random.default_rng(0)
        height, width = resolve_input_size(classifier.image_processor)
        batch = {"pixel_values": rng.normal(size=(8, 3, height, width)).astype(np.float32)}
        if isinstance(classifier.processor, SkinProcessor):
            batch.update(classifier.processor.encode_metadata(8, return_tensors="np"))
        validation, labels = [batch], None
    with torch.inference_mode():
        reference = np.concatenate(
            [
                classifier.model(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.float().numpy()
                for b in validation
            ]
        )
    return compare_predictions(reference, run_onnx(fp32, validation), labels)


# ---------------------------------------------------------------------------------------------------------------
# A finished run: its own training split calibrates, its own validation split checks


def run_inputs(
    classifier: SkinClassifier, dataset, max_images: int | None = None, batch_size: int = 32, seed: int = 0
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Input batches (numpy, as the exported model's runtime makes them from the files) and the true label ids of
    up to `max_images` rows of a HAM10000 `dataset` split (a seeded random choice when it has more)."""
    import datasets

    from ..evaluation import metadata_words, model_label_ids
    from ..inference import OnnxImageProcessor
    from ..processing import load_image

    if max_images is not None and len(dataset) > max_images:
        rows = np.sort(np.random.default_rng(seed).choice(len(dataset), max_images, replace=False))
        dataset = dataset.select(rows)
    labels = model_label_ids(dataset, classifier.labels, "the model")
    fields = list(classifier.metadata_fields)
    data = dataset.select_columns(["image", *fields]).cast_column("image", datasets.Image(decode=False))
    batches = []
    spec_image = image_spec(classifier.image_processor)  # the export runtime's preprocessing (numpy, no torch)
    for start in range(0, len(data), batch_size):
        rows = data[start : start + batch_size]
        images = [load_image(value) for value in rows["image"]]
        batch = OnnxImageProcessor(spec_image)(images)
        if isinstance(classifier.processor, SkinProcessor):
            words = metadata_words(rows, fields, dataset.features)
            batch.update(classifier.processor.encode_metadata(len(images), return_tensors="np", **words))
        batches.append(batch)
    return batches, labels


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    quantize: str | None = None,
    dataset: str | os.PathLike | None = None,
    calibration_images: int = 256,
    validation_images: int | None = None,
) -> dict[str, Any]:
    """Exports a finished run, or a checkpoint derived from one (e.g. recalibrated), to `out_dir`. Its fp32 parity
    and, with `quantize="int8"`, the int8 model's agreement are measured on `validation_images` of the run's own
    validation split (all of it with `None`); int8 is calibrated on `calibration_images` of its training split. The
    data is the run's dataset (`run_args.json`) unless `dataset` is given. Returns the spec."""
    from ..runs import FAILED, RUNNING, RunFolder

    folder = RunFolder(run_dir)
    has_model = (folder.path / "config.json").is_file() and any(folder.path.glob("*.safetensors"))
    if not folder.path.is_dir() or folder.status in (RUNNING, FAILED) or not has_model:
        folder.require_finished()  # says what is wrong: no folder, still running, failed, no saved model
    # A finished run, or a checkpoint derived from one (scripts/calibrate.py's copy has no test metrics of its own)
    check_output_dir(out_dir)
    classifier = SkinClassifier.from_pretrained(folder.path)
    source = dataset or (folder.args or {}).get("dataset")
    calibration = validation = labels = None
    if source and Path(source).exists():
        splits = folder.splits(source)
        validation, labels = run_inputs(classifier, splits["validation"], validation_images)
        if quantize:
            calibration, _ = run_inputs(classifier, splits["train"], calibration_images, seed=1)
    elif quantize:
        raise ExportError(
            f"int8 quantisation calibrates on the run's training images, but its dataset {source!r} is not here: "
            "pass --dataset DIR (the HAM10000 folder the run trained on)"
        )
    else:
        logger.warning("the run's dataset %r is not here: fp32 parity is checked on random inputs only", source)
    return export_onnx(classifier, out_dir, quantize, calibration, validation, labels, source=os.fspath(folder.path))
