"""Export a finished run to ONNX for onnxruntime, phones and browsers: `model.onnx` (fp32, dynamic batch axis),
with `--quantize int8` also `model_int8.onnx` (calibrated on the run's training images, checked on its validation
images), and `hf_skin_export.json`, the spec of the inputs, preprocessing, labels and metadata encoding.

    python scripts/export_onnx.py runs/efficientnet_lite0 exports/lite0 --quantize int8

`SkinClassifier.from_pretrained("exports/lite0")` serves the export without torch; `make ondevice RUN=...` builds
the in-browser page over it.
"""

from hf_skin.cli import export_onnx as main

if __name__ == "__main__":
    main()
