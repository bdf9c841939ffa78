"""Parity of an export with its run, end to end: the run's validation split through `SkinClassifier` on PyTorch
(transformers' image processor, torchvision resize) and on the export's ONNX models (onnxruntime, hf-skin's numpy
resize), each image decoded from its file, with its metadata for multi-input models.

    python benchmarks/parity_onnx.py runs/efficientnet_lite0 exports/lite0 [--split validation]

Prints, for fp32 and int8: top-1 agreement with PyTorch, the largest probability difference, and both balanced
accuracies (against the true labels). With `--browser N`, also the on-device page (built from the export by `make
ondevice`, in headless Chromium) on the split's first N images, against Python onnxruntime's int8 probabilities.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import datasets
import numpy as np
from tqdm.auto import tqdm

from hf_skin.evaluation import metadata_words, model_label_ids
from hf_skin.export.parity import _balanced_accuracy
from hf_skin.inference import EXPORT_SPEC, SkinClassifier
from hf_skin.processing import load_image
from hf_skin.runs import RunFolder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("export_dir")
    parser.add_argument("--split", default="validation")
    parser.add_argument("--dataset", default=None, help="default: the run's own (run_args.json)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--browser", type=int, default=0, help="images to classify in the page too (0: none)")
    args = parser.parse_args()
    folder = RunFolder(args.run_dir).require_finished()
    data = folder.splits(args.dataset)[args.split]
    reference = SkinClassifier.from_pretrained(args.run_dir)
    spec = json.loads((Path(args.export_dir) / EXPORT_SPEC).read_text())
    exports = {precision: SkinClassifier.from_export(args.export_dir, precision) for precision in spec["models"]}
    labels = model_label_ids(data, reference.labels, args.run_dir)
    fields = reference.metadata_fields
    rows = data.select_columns(["image", *fields]).cast_column("image", datasets.Image(decode=False))
    probs = {"pytorch": [], **{k: [] for k in exports}}
    for start in tqdm(range(0, len(rows), args.batch_size), desc="Predicting", unit="batch"):
        batch = rows[start : start + args.batch_size]
        images = [load_image(value) for value in batch["image"]]
        metadata = metadata_words(batch, fields, data.features)
        probs["pytorch"].append(reference.predict_proba(images, **metadata).numpy())
        for precision, classifier in exports.items():
            probs[precision].append(classifier.predict_proba(images, **metadata))
    probs = {k: np.concatenate(v) for k, v in probs.items()}
    ref = probs["pytorch"]
    out = {"split": args.split, "n": len(ref), "pytorch_balanced_accuracy": _balanced_accuracy(labels, ref.argmax(1))}
    for precision in exports:
        p = probs[precision]
        out[precision] = {
            "top1_agreement": float(np.mean(p.argmax(1) == ref.argmax(1))),
            "max_probability_difference": float(np.abs(p - ref).max()),
            "balanced_accuracy": _balanced_accuracy(labels, p.argmax(1)),
        }
    if args.browser:
        out["browser_int8"] = browser_parity(args.export_dir, rows, fields, data.features, probs["int8"], args.browser)
    print(json.dumps(out, indent=2))


def browser_parity(export_dir, rows, fields, features, expected: np.ndarray, n: int) -> dict:
    """The page's probabilities for the first `n` rows (the photo file and its metadata typed in) against
    `expected` (Python onnxruntime, int8)."""
    import shutil
    import tempfile

    from bench_onnx import ondevice_page  # benchmarks/ is on sys.path when this file runs

    work = Path(tempfile.mkdtemp(prefix="hf_skin_parity_photos_"))
    differences, agree = [], []
    labels = json.loads((Path(export_dir) / EXPORT_SPEC).read_text())["labels"]
    try:
        with ondevice_page(export_dir) as page:
            batch = rows[:n]
            words = metadata_words(batch, fields, features)
            for i, value in enumerate(tqdm(batch["image"], desc="In the browser", unit="image")):
                photo = work / f"{i}.jpg"
                photo.write_bytes(value["bytes"] or Path(value["path"]).read_bytes())
                page.set_input_files("#photo", str(photo))
                if "age" in fields:
                    page.fill("#age", "" if words["age"][i] is None else f"{words['age'][i]:g}")
                for field in ("sex", "localization"):
                    if field in fields:
                        page.select_option(f"#{field}", words[field][i] or "unknown")
                page.evaluate("window.hfSkinResult = null")
                page.click("#classify")
                page.wait_for_function("window.hfSkinResult", timeout=60_000)
                result = page.evaluate("window.hfSkinResult")
                got = np.array([result["probs"][label] for label in labels])
                differences.append(float(np.abs(got - expected[i]).max()))
                agree.append(bool(got.argmax() == expected[i].argmax()))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "n": len(differences),
        "max_probability_difference": max(differences),
        "median_max_probability_difference": float(np.median(differences)),
        "images_over_1e-3": int(np.sum(np.asarray(differences) > 1e-3)),
        "top1_agreement": float(np.mean(agree)),
    }


if __name__ == "__main__":
    main()
