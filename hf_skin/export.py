"""A checkpoint -> ONNX (+ int8), with the spec a runtime needs to feed it and read it (`hf_skin_export.json`).

```python
from hf_skin.export import export_run
export_run("runs/efficientnet_lite0", "exports/lite0", quantize="int8")   # scripts/export_onnx.py does this
SkinClassifier.from_pretrained("exports/lite0", precision="int8").predict("lesion.jpg")   # onnxruntime, no torch
```

Every family exports through `torch.onnx.export(dynamo=True)` (the TorchScript exporter gets timm's TF-"same"
padding wrong: its logits differed by up to 3 on EfficientNet-Lite0), with a dynamic batch axis and a fixed image
size; a multi-input model's metadata are named inputs (`age`, `age_missing`, `sex`, `localization`), encoded as
`SkinProcessor` encodes them. The int8 model is made by onnxruntime's quantisation tools: static QDQ quantisation
calibrated on training-split images (per channel and per tensor) and dynamic quantisation are measured against the
fp32 model on validation images, and the kept one is recorded in the spec with its measurements. Where none meets
the targets, static models that keep their first layers fp32 (the most sensitive to int8 rounding, and few weights)
compete, then quantisation-aware fine-tuned copies (fully int8).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image

from .inference import EXPORT_SPEC, UNCERTAIN_BELOW, SkinClassifier, softmax
from .labels import DX_NAMES, MALIGNANT_DX, MAX_AGE, MIN_AGE
from .processing import SkinProcessor, image_spec, pixel_grid
from .quantization import QAT_IMAGES, QAT_LEARNING_RATE, QAT_LOSS, QAT_STEPS, describe_copy, quantization_aware_copy

logger = logging.getLogger(__name__)

SPEC_FORMAT = "hf-skin-onnx"
SPEC_VERSION = 1
FP32_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"
OPSET = 18
# What the int8 model must keep of the fp32 model (issue 12): the same top-1 on 99% of images, balanced accuracy
# within 0.01. Static quantisation (faster: integer convolutions) is kept when it meets both.
MIN_AGREEMENT = 0.99
MAX_BALANCED_ACCURACY_DROP = 0.01
QUANTIZATION_CHOICES = ("int8",)
# How many of the first weighted layers (`quantize`'s `fp32_layers`) a static int8 model may keep in fp32, tried in
# this order while no int8 model meets the targets (benchmarks/RESULTS.md, issue 12: on EfficientNet-Lite0 the first
# layers' int8 input and weights cost most of the agreement; kept fp32, 2 layers took the image-only model from 27
# images of 1,286 that differ to 12, 6 the multi-input one from 24 to 7, for almost no latency and < 2% of the int8
# file on EfficientNet-Lite0; ViT-Base's first 6 are large matrices: +19% bytes, 25% slower)
FP32_LAYER_COUNTS = (2, 6)
# When they compete (`first_layers_fp32`): while no fully int8 model meets the targets, or never (the on-device page
# then computes what Python onnxruntime does to the bit: float layers in front of int8 ones round differently in
# WebAssembly, up to 0.025 in probability; benchmarks/RESULTS.md, issue 12, "In the browser")
FIRST_LAYERS_CHOICES = ("auto", "never")
# The nodes that count as a layer for `fp32_layers` (with a constant weight, on the image's path)
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
# Elementwise nodes that, after a layer, make its activation (a Conv's Clip, SiLU's Sigmoid and Mul, a MatMul's bias
# Add and Gelu, or Gelu's own Div, Erf, Add, Mul): they stay fp32 with the layer they read
ACTIVATION_OPS = (
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Clip",
    "Relu",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Gelu",
    "Erf",
    "Tanh",
)
# When a quantisation-aware fine-tuned copy (quantization_aware_copy) competes for int8: when post-training int8
# misses the targets, always, never; and how it learns. One copy per learning rate, in this order, until one meets
# the targets (every rate with "always"; benchmarks/RESULTS.md, issue 12: on one training 2e-6 suited the
# multi-input Lite0, 2e-5 the image-only one)
FINE_TUNE_CHOICES = ("auto", "always", "never")
QAT_LEARNING_RATES = (QAT_LEARNING_RATE, 2e-5)
# The metadata inputs of the multi-input model (SkinProcessor.encode_metadata's names)
METADATA_INPUTS = ("age", "age_missing", "sex", "localization", "dx_type")


class ExportError(ValueError):
    """A checkpoint or output folder that cannot be exported as asked; the message says what to do."""


def is_export(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder written by `export_onnx` (it holds `hf_skin_export.json`)."""
    return (Path(path) / EXPORT_SPEC).is_file()


def input_names(classifier: SkinClassifier) -> list[str]:
    """The exported model's inputs, in order: `pixel_values`, then the metadata tensors `SkinProcessor` makes."""
    if isinstance(classifier.processor, SkinProcessor):
        return ["pixel_values", *classifier.processor.encode_metadata(1, return_tensors="np")]
    return ["pixel_values"]


def export_spec(classifier: SkinClassifier) -> dict[str, Any]:
    """Everything a runtime needs besides the ONNX file: the preprocessing, the inputs, the labels, the metadata
    encoding, and the calibration and operating point the model config carries (calibration is already folded into
    the exported logits: a runtime only takes their softmax)."""
    from . import __version__

    config = classifier.model.config
    image = image_spec(classifier.image_processor)
    height, width = image["input_size"]
    inputs = [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, height, width]}]
    metadata = None
    if isinstance(classifier.processor, SkinProcessor):
        processor = classifier.processor
        encoded = processor.encode_metadata(1, return_tensors="np")
        inputs += [{"name": name, "dtype": str(value.dtype), "shape": ["batch"]} for name, value in encoded.items()]
        metadata = {
            "fields": processor.metadata_fields,
            "vocabularies": {
                field: processor.vocabularies[field] for field in processor.metadata_fields if field != "age"
            },
            "unknown": "unknown",
            "synonyms": SkinProcessor._SYNONYMS,
        }
        if "age" in processor.metadata_fields:
            metadata["age"] = {
                "mean": processor.age_mean,
                "std": processor.age_std,
                "range": [MIN_AGE, MAX_AGE],
                "encoding": "age = (years - mean) / std and age_missing = 0; unknown: age = 0, age_missing = 1",
            }
    labels = list(classifier.labels)
    return {
        "format": SPEC_FORMAT,
        "format_version": SPEC_VERSION,
        "hf_skin_version": __version__,
        "exported": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_type": config.model_type,
        "architecture": getattr(config, "architecture", None) or (config.architectures or [None])[0],
        "labels": labels,
        "label_names": {label: DX_NAMES.get(label, label) for label in labels},
        "malignant": [dx for dx in MALIGNANT_DX if dx in labels],
        "uncertain_below": UNCERTAIN_BELOW,
        "image": {
            **image,
            "exif_transpose": True,
            # hf_skin.processing.load_image refuses larger images (PIL's decompression-bomb error)
            "max_pixels": 2 * PIL.Image.MAX_IMAGE_PIXELS,
            "transparency": "composited over white",
            "convert": "RGB (16-bit grey scaled to 8 bits)",
        },
        "inputs": inputs,
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(labels)]}],
        "metadata": metadata,
        "calibration": _plain(getattr(config, "calibration", None)),
        # what the Space says about the probabilities (Calibration.describe), None for a raw model
        "calibration_note": classifier.calibration.describe(labels) if classifier.calibration else None,
        "operating_point": _plain(getattr(config, "operating_point", None)),
        # training's --int8_ready: the weights are int8 numbers already (hf_skin.quantization), None otherwise
        "int8_ready": _plain(getattr(config, "int8_ready", None)),
        "models": {},
    }


def _plain(value):
    return json.loads(json.dumps(value)) if value is not None else None


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


class _Reader:
    """onnxruntime's `CalibrationDataReader` over a list of input dicts (one batch of 1 per call)."""

    def __init__(self, batches: list[dict[str, np.ndarray]]):
        self.rows = iter(
            [
                {name: value[i : i + 1] for name, value in batch.items()}
                for batch in batches
                for i in range(len(batch["pixel_values"]))
            ]
        )

    def get_next(self):
        return next(self.rows, None)


def quantize(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    method: str,
    calibration: list[dict[str, np.ndarray]] | None = None,
    per_channel: bool = True,
    fp32_layers: int = 0,
    input_grid: tuple[float, int] | None = None,
) -> Path:
    """An int8 copy of the fp32 ONNX model: `method` `"static"` (QDQ, uint8 activations and int8 weights, min-max
    ranges from the `calibration` inputs) or `"dynamic"` (int8 weights, activation ranges computed per batch).
    `fp32_layers`: how many of the first weighted layers stay fp32 (`leading_nodes`), with everything before them.
    `input_grid`: `pixel_values`' static scale and zero point, instead of its calibrated range
    (`hf_skin.processing.pixel_grid`: every 8-bit pixel then exact in int8)."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_dynamic,
        quantize_static,
    )

    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="hf_skin_quantize_") as tmp, _quiet_root_logger():
        prepared = Path(tmp) / "prepared.onnx"
        # shape inference + graph optimisation first: the quantiser's documented preparation
        quant_pre_process(os.fspath(fp32_path), os.fspath(prepared), skip_symbolic_shape=True)
        kept_fp32 = leading_nodes(prepared, fp32_layers) if fp32_layers else []
        if method == "static":
            if not calibration:
                raise ExportError("static quantisation needs calibration images: pass some training-split images")
            quantize_static(
                os.fspath(prepared),
                os.fspath(out_path),
                _Reader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                extra_options={
                    "CalibTensorRangeSymmetric": False,
                    "TensorQuantOverrides": _input_overrides(input_grid),
                },
                nodes_to_exclude=kept_fp32,
            )
        elif method == "dynamic":
            quantize_dynamic(
                os.fspath(prepared),
                os.fspath(out_path),
                per_channel=per_channel,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=kept_fp32,
            )
        else:
            raise ValueError(f"quantisation method {method!r} is not static or dynamic")
    return out_path


def _input_overrides(input_grid: tuple[float, int] | None) -> dict:
    """onnxruntime's `TensorQuantOverrides` that quantise `pixel_values` on `input_grid` (none without one)."""
    if input_grid is None:
        return {}
    step, zero = input_grid
    return {"pixel_values": [{"scale": np.array(step, np.float32), "zero_point": np.array(zero, np.uint8)}]}


def leading_nodes(model_path: str | os.PathLike, layers: int) -> list[str]:
    """The names of the nodes that stay fp32 when `quantize` keeps an ONNX graph's first `layers` layers fp32: the
    image's path from `pixel_values` (in graph order) up to its `layers`-th layer (`image_layers`) and the
    activation that reads it (`_activation_end`). One block from the input on, so that the quantised graph has a
    single boundary (a layer kept fp32 alone in the middle moves its activation's int8 range onto the wider range
    before the activation, and cost more agreement than it saved). A multi-input model's metadata branch is not
    on the image's path: it stays int8."""
    graph = _graph(model_path)
    path = _image_path(graph)
    weighted = _layers(graph, path)
    if not 0 < layers < len(weighted):
        raise ExportError(
            f"fp32_layers={layers}: the model has {len(weighted)} layers on the image's path, and at least one must "
            "stay int8"
        )
    last = _activation_end(graph, path, weighted[layers - 1])
    names = [node.name for node in path[: last + 1]]
    if not all(names):
        raise ExportError("the ONNX graph has unnamed nodes: its first layers cannot be kept fp32")
    return names


def weighted_layers(model_path: str | os.PathLike) -> int:
    """How many layers on the image's path (`image_layers`) an ONNX model has: `quantize`'s `fp32_layers` must
    leave at least one of them int8."""
    return len(image_layers(_graph(model_path)))


def describe_int8(entry: dict) -> str:
    """How an int8 model was made, in words, from its spec entry or candidate measurements: e.g. "static, per
    channel, first 6 layers fp32" (the CLI's printout and bench_onnx.py)."""
    return (
        f"{entry['method']}{', per channel' if entry.get('per_channel') else ''}"
        f"{', first {} layers fp32'.format(entry['fp32_layers']) if entry.get('fp32_layers') else ''}"
        f"{', quantisation-aware fine-tuned' if entry.get('quantization_aware') else ''}"
        f"{' at {:g}'.format(entry['learning_rate']) if 'learning_rate' in entry else ''}"
    )


def image_layers(graph) -> list:
    """An ONNX graph's layers on the image's path (`_image_path`), in order: `WEIGHTED_OPS` nodes with a weight (a
    constant) among their inputs; attention's products of two activations are not layers."""
    path = _image_path(graph)
    return [path[i] for i in _layers(graph, path)]


def _layers(graph, path: list) -> list[int]:
    """The positions in `path` of `image_layers(graph)`."""
    weights = _constants(graph)
    return [i for i, node in enumerate(path) if node.op_type in WEIGHTED_OPS and weights.intersection(node.input)]


def _graph(model_path: str | os.PathLike):
    import onnx

    return onnx.load(os.fspath(model_path), load_external_data=False).graph


def _image_path(graph) -> list:
    """The nodes that read `pixel_values`, directly or through other nodes, in graph (topological) order."""
    derived, path = {"pixel_values"}, []
    for node in graph.node:
        if derived.intersection(node.input):
            path.append(node)
            derived.update(node.output)
    return path


def _constants(graph) -> set[str]:
    """The names of a graph's constant tensors: its initializers and `Constant` nodes' outputs."""
    return {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}


def _activation_end(graph, path: list, layer: int) -> int:
    """The position, in `path`, of the last node of `layer`'s activation: the elementwise nodes (`ACTIVATION_OPS`)
    that follow it and read only its output, what they made of it and constants (a Conv's Clip; SiLU's Sigmoid and
    Mul; a MatMul's bias Add and Gelu). The first node that reads them and something else (a residual Add) or is
    not elementwise ends it."""
    constants, chain, last = _constants(graph), set(path[layer].output), layer
    for i in range(layer + 1, len(path)):
        node = path[i]
        inputs = {name for name in node.input if name and name not in constants}
        if not inputs & chain:
            continue
        if node.op_type not in ACTIVATION_OPS or not inputs <= chain:
            break
        chain.update(node.output)
        last = i
    return last


@contextlib.contextmanager
def _quiet_root_logger():
    """onnxruntime's quantiser logs a line per tensor ("Quantization parameters for tensor ... not specified", some
    hundreds for EfficientNet) with `logging.info` on the root logger: kept to warnings while it runs."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def _run(path: Path, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return np.concatenate([session.run(["logits"], {n: b[n] for n in names})[0] for b in batches])


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    recalls = [np.mean(predicted[labels == k] == k) for k in np.unique(labels)]
    return float(np.mean(recalls))


def compare_predictions(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None
) -> dict[str, float]:
    """How `candidate` logits agree with `reference` logits (same rows): top-1 agreement, the largest probability
    difference, and (with true `labels`) both balanced accuracies."""
    p_ref, p_new = softmax(reference), softmax(candidate)
    out = {
        "n": int(len(reference)),
        "top1_agreement": float(np.mean(p_ref.argmax(1) == p_new.argmax(1))),
        "max_probability_difference": float(np.abs(p_ref - p_new).max()),
    }
    if labels is not None:
        out["balanced_accuracy_reference"] = _balanced_accuracy(labels, p_ref.argmax(1))
        out["balanced_accuracy"] = _balanced_accuracy(labels, p_new.argmax(1))
    return out


def quantize_best(
    fp32_path: Path,
    out_path: Path,
    calibration: list[dict[str, np.ndarray]],
    validation: list[dict[str, np.ndarray]],
    validation_labels: np.ndarray | None = None,
    fine_tuned: Callable[[Path, float], Path] | None = None,
    fine_tune: str = "auto",
    first_layers_fp32: str = "auto",
    input_grid: tuple[float, int] | None = None,
) -> dict[str, Any]:
    """Static (per channel, per tensor) and dynamic int8 models (static ones quantise `pixel_values` on `input_grid`
    when given: `quantize`), each measured against the fp32 model on the
    `validation` inputs; the kept one is written to `out_path`. While no static model meets the targets
    (`MIN_AGREEMENT`, `MAX_BALANCED_ACCURACY_DROP`), static per-channel models that keep their first layers fp32
    compete, one per count of `FP32_LAYER_COUNTS` in order (none with `first_layers_fp32="never"`). With
    `fine_tuned` (it writes the fp32 ONNX model of a quantisation-aware copy, fine-tuned at the learning rate it is
    given, into the folder it is given and returns its path), static per-channel int8 of such copies competes too,
    fully int8 (a copy learns the int8 rounding of every layer; with its first ones fp32 too, one copy's 13 images
    that differ became 25, another's 23 became 7, as without the copy: benchmarks/RESULTS.md), measured against the
    same original fp32 model: one copy per rate of `QAT_LEARNING_RATES`, in order, while no candidate meets the
    targets (`fine_tune="auto"`), or every rate (`"always"`). The first static model that meets the targets, in the
    order they were made, is kept; otherwise the one that agrees most. Returns the kept method and every
    candidate's measurements."""
    reference = _run(fp32_path, validation)
    measured, failed = [], []  # (measurements, path) of each candidate that quantised; the errors of the others

    def candidate(source: Path, path: Path, method: str, per_channel: bool, fp32_layers: int = 0, **extra):
        how = dict(method=method, per_channel=per_channel, fp32_layers=fp32_layers, **extra)
        try:
            quantize(
                source,
                path,
                method,
                calibration,
                per_channel=per_channel,
                fp32_layers=fp32_layers,
                input_grid=input_grid,
            )
            result = compare_predictions(reference, _run(path, validation), validation_labels)
        except Exception as err:  # a quantiser that fails on some graph: recorded, the others still compete
            logger.warning("int8 %s failed: %s", how, err)
            failed.append({**how, "error": str(err)})
            return
        result.update(how, bytes=path.stat().st_size)
        result["meets_targets"] = _meets_targets(result)
        measured.append((result, path))
        logger.info("int8 %s: %s", how, result)

    def static_ok():
        return [item for item in measured if item[0]["method"] == "static" and item[0]["meets_targets"]]

    with tempfile.TemporaryDirectory(prefix="hf_skin_int8_") as tmp:
        for method, per_channel in [("static", True), ("static", False), ("dynamic", False)]:
            path = Path(tmp) / f"{method}_{'per_channel' if per_channel else 'per_tensor'}.onnx"
            candidate(fp32_path, path, method, per_channel)
        count = weighted_layers(fp32_path)
        for layers in FP32_LAYER_COUNTS if first_layers_fp32 == "auto" else ():
            if not static_ok() and layers < count:  # some layers left to quantise
                candidate(fp32_path, Path(tmp) / f"static_fp32_layers_{layers}.onnx", "static", True, layers)
        for rate in QAT_LEARNING_RATES if fine_tuned is not None else ():
            if fine_tune == "always" or not static_ok():
                source = fine_tuned(Path(tmp), rate)
                path = Path(tmp) / f"static_per_channel_qat_{rate:g}.onnx"
                candidate(source, path, "static", True, quantization_aware=True, learning_rate=rate)
        if not measured:
            raise ExportError(f"every int8 quantisation failed: {failed}")
        passing = static_ok()
        kept, path = passing[0] if passing else max(measured, key=lambda item: item[0]["top1_agreement"])
        shutil.copyfile(path, out_path)
    if not kept["meets_targets"]:
        logger.warning(
            "no int8 model meets the targets (top-1 agreement with fp32 >= %.0f%%, balanced accuracy within %s): "
            "kept the closest, %.2f%% agreement; serve the fp32 model where int8's answers must match it",
            100 * MIN_AGREEMENT,
            MAX_BALANCED_ACCURACY_DROP,
            100 * kept["top1_agreement"],
        )
    how = ("method", "per_channel", "fp32_layers", "quantization_aware", "learning_rate")
    return {
        **{k: kept[k] for k in how if k in kept},
        "quantization_aware": kept.get("quantization_aware", False),
        "validation": {k: v for k, v in kept.items() if k not in (*how, "bytes")},
        "candidates": [result for result, _ in measured] + failed,
        "calibration_images": sum(len(b["pixel_values"]) for b in calibration),
        # pixel_values' scale and zero point when they were set from the pixel grid, not calibrated (static models)
        "input_grid": None if input_grid is None else {"scale": input_grid[0], "zero_point": input_grid[1]},
    }


def _meets_targets(result: dict) -> bool:
    drop = result.get("balanced_accuracy_reference", 0.0) - result.get("balanced_accuracy", 0.0)
    return result["top1_agreement"] >= MIN_AGREEMENT and drop <= MAX_BALANCED_ACCURACY_DROP


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
    fine_tune: str = "auto",
    fine_tune_inputs: list[dict[str, np.ndarray]] | Callable[[], list[dict[str, np.ndarray]]] | None = None,
    fine_tune_steps: int = QAT_STEPS,
    first_layers_fp32: str = "auto",
) -> dict[str, Any]:
    """Exports a checkpoint folder (or a loaded PyTorch `SkinClassifier`) to `out_dir`: `model.onnx`, with
    `quantize="int8"` also `model_int8.onnx` (calibrated on `calibration`, chosen on `validation`: lists of input
    batches as `SkinClassifier.model_inputs` makes them for an exported model), and `hf_skin_export.json`.
    Quantisation-aware copies (`quantization_aware_copy`, `fine_tune_steps` on `fine_tune_inputs`, training-split
    inputs or a function that reads them, called once, when the first copy is made; else the calibration ones)
    compete for int8, one per rate of `QAT_LEARNING_RATES` in order: while no candidate meets the targets when
    `fine_tune` is `"auto"`, every rate when it is `"always"`, none with `"never"`. Static int8 models that keep their
    first layers fp32 compete while none meets the targets, unless `first_layers_fp32` is `"never"`.

    The fp32 model is checked against PyTorch on the validation inputs (or on random ones without them). Returns
    the spec."""
    if quantize not in (None, *QUANTIZATION_CHOICES):
        raise ExportError(f"quantize={quantize!r}: the choices are {', '.join(QUANTIZATION_CHOICES)} or none")
    if quantize and not (calibration and validation):
        raise ExportError("int8 quantisation needs calibration and validation images (export_run reads the run's)")
    if fine_tune not in FINE_TUNE_CHOICES:
        raise ExportError(f"fine_tune={fine_tune!r}: the choices are {', '.join(FINE_TUNE_CHOICES)}")
    if first_layers_fp32 not in FIRST_LAYERS_CHOICES:
        raise ExportError(
            f"first_layers_fp32={first_layers_fp32!r}: the choices are {', '.join(FIRST_LAYERS_CHOICES)}"
        )
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

        @functools.cache
        def qat_inputs():  # read once, when the first copy is made
            return (fine_tune_inputs() if callable(fine_tune_inputs) else fine_tune_inputs) or calibration

        def fine_tuned(folder: Path, learning_rate: float) -> Path:
            images = sum(len(b["pixel_values"]) for b in qat_inputs())
            record = spec.setdefault(
                "quantization_aware", {**describe_copy(fine_tune_steps, images), "learning_rates": []}
            )
            record["learning_rates"].append(learning_rate)
            student = quantization_aware_copy(
                classifier.model, qat_inputs(), steps=fine_tune_steps, learning_rate=learning_rate, loss=QAT_LOSS
            )
            path = folder / f"quantization_aware_{learning_rate:g}.onnx"
            return export_fp32(SkinClassifier(student, classifier.processor), path)

        int8 = out_dir / INT8_FILE
        report = quantize_best(
            fp32,
            int8,
            calibration,
            validation,
            validation_labels,
            fine_tuned=None if fine_tune == "never" else fine_tuned,
            fine_tune=fine_tune,
            first_layers_fp32=first_layers_fp32,
            input_grid=pixel_grid(spec["image"]),
        )
        spec["models"]["int8"] = {**_file_entry(int8), **report}
    (out_dir / EXPORT_SPEC).write_text(json.dumps(spec, indent=2) + "\n")
    return spec


def _parity(classifier, fp32: Path, validation, labels) -> dict[str, float]:
    """fp32 ONNX against PyTorch on the same inputs: the validation batches, or 8 random images."""
    import torch

    if not validation:
        rng = np.random.default_rng(0)
        height, width = image_spec(classifier.image_processor)["input_size"]
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
    return compare_predictions(reference, _run(fp32, validation), labels)


# ---------------------------------------------------------------------------------------------------------------
# A finished run: its own training split calibrates, its own validation split chooses and checks


def run_inputs(
    classifier: SkinClassifier, dataset, max_images: int | None = None, batch_size: int = 32, seed: int = 0
) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """Input batches (numpy, as the exported model's runtime makes them from the files) and the true label ids of
    up to `max_images` rows of a HAM10000 `dataset` split (a seeded random choice when it has more)."""
    import datasets

    from .evaluation import metadata_words, model_label_ids
    from .inference import OnnxImageProcessor
    from .processing import load_image

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
    fine_tune: str = "auto",
    fine_tune_images: int = QAT_IMAGES,
    fine_tune_steps: int = QAT_STEPS,
    first_layers_fp32: str = "auto",
) -> dict[str, Any]:
    """Exports a finished run, or a checkpoint derived from one (e.g. recalibrated), to `out_dir`. Its fp32 parity
    and, with `quantize="int8"`, the int8 choice are measured on `validation_images` of the run's own validation
    split (all of it with `None`); int8 is calibrated on `calibration_images` of its training split. The data is the
    run's dataset (`run_args.json`) unless `dataset` is given. Returns the spec."""
    from .runs import FAILED, RUNNING, RunFolder

    folder = RunFolder(run_dir)
    has_model = (folder.path / "config.json").is_file() and any(folder.path.glob("*.safetensors"))
    if not folder.path.is_dir() or folder.status in (RUNNING, FAILED) or not has_model:
        folder.require_finished()  # says what is wrong: no folder, still running, failed, no saved model
    # A finished run, or a checkpoint derived from one (scripts/calibrate.py's copy has no test metrics of its own)
    check_output_dir(out_dir)
    classifier = SkinClassifier.from_pretrained(folder.path)
    source = dataset or (folder.args or {}).get("dataset")
    calibration = validation = labels = fine_tune_inputs = None
    if source and Path(source).exists():
        splits = folder.splits(source)
        validation, labels = run_inputs(classifier, splits["validation"], validation_images)
        if quantize:
            calibration, _ = run_inputs(classifier, splits["train"], calibration_images, seed=1)

            def fine_tune_inputs():  # read only if a quantisation-aware copy is made
                return run_inputs(classifier, splits["train"], fine_tune_images, seed=2)[0]
    elif quantize:
        raise ExportError(
            f"int8 quantisation calibrates on the run's training images, but its dataset {source!r} is not here: "
            "pass --dataset DIR (the HAM10000 folder the run trained on)"
        )
    else:
        logger.warning("the run's dataset %r is not here: fp32 parity is checked on random inputs only", source)
    spec = export_onnx(
        classifier,
        out_dir,
        quantize,
        calibration,
        validation,
        labels,
        source=os.fspath(folder.path),
        fine_tune=fine_tune,
        fine_tune_inputs=fine_tune_inputs,
        fine_tune_steps=fine_tune_steps,
        first_layers_fp32=first_layers_fp32,
    )
    return spec
