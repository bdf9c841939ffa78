"""A checkpoint -> ONNX (+ int8), with the spec a runtime needs to feed it and read it (`hf_skin_export.json`).

```python
from hf_skin.export import export_run
export_run("runs/efficientnet_lite0", "exports/lite0", quantize="int8")   # scripts/export_onnx.py does this
SkinClassifier.from_pretrained("exports/lite0", precision="int8").predict("lesion.jpg")   # onnxruntime, no torch
```

Every family exports through `torch.onnx.export(dynamo=True)` (the TorchScript exporter gets timm's TF-"same"
padding wrong: its logits differed by up to 3 on EfficientNet-Lite0), with a dynamic batch axis and a fixed image
size; a multi-input model's metadata are named inputs (`age`, `age_missing`, `sex`, `localization`), encoded as
`SkinProcessor` encodes them (`onnx`). The int8 model is onnxruntime's static QDQ quantisation, per channel,
calibrated on training-split images and measured against the fp32 model on validation images (`int8`); the spec
(`spec`) records the measurements, and the export warns when they miss the targets.
"""

from .int8 import MAX_BALANCED_ACCURACY_DROP, MIN_AGREEMENT, QUANTIZATION_CHOICES, export_int8, quantize
from .onnx import OPSET, check_output_dir, export_fp32, export_onnx, export_run, run_inputs
from .parity import compare_predictions, run_onnx
from .spec import (
    FP32_FILE,
    INT8_FILE,
    METADATA_INPUTS,
    SPEC_FORMAT,
    SPEC_VERSION,
    ExportError,
    export_spec,
    input_names,
    is_export,
)

__all__ = [
    "FP32_FILE",
    "INT8_FILE",
    "MAX_BALANCED_ACCURACY_DROP",
    "METADATA_INPUTS",
    "MIN_AGREEMENT",
    "OPSET",
    "QUANTIZATION_CHOICES",
    "SPEC_FORMAT",
    "SPEC_VERSION",
    "ExportError",
    "check_output_dir",
    "compare_predictions",
    "export_fp32",
    "export_int8",
    "export_onnx",
    "export_run",
    "export_spec",
    "input_names",
    "is_export",
    "quantize",
    "run_inputs",
    "run_onnx",
]
