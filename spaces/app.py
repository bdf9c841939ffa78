"""The hf-skin Space: a skin-lesion photo (+ age, sex and body site for multi-input models) -> the 7 HAM10000
diagnoses with probabilities, the probability of a malignant class, and an explanation heatmap.

    HF_SKIN_MODEL=runs/demo python spaces/app.py      # a checkpoint folder or a Hub model id

Without HF_SKIN_MODEL the model is the first of `models:` in this folder's README.md (the Space's card).
The work is done by hf_skin (`SkinClassifier`, `summarize`, `explain`); this file builds the page.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import tempfile
import uuid
from pathlib import Path

import gradio as gr
from huggingface_hub import metadata_load
from PIL import Image

from hf_skin.data import LOCALIZATION_LABELS, SEX_LABELS
from hf_skin.explain import explain
from hf_skin.inference import SkinClassifier, display_name, summarize
from hf_skin.processing import load_image
from hf_skin.synthetic import make_synthetic_ham10000

logger = logging.getLogger(__name__)

DISCLAIMER = (
    "**Research demo — not a diagnosis.** This model learned from HAM10000, a collection of dermatoscope images "
    "of 7 kinds of pigmented skin lesions; it has not been clinically validated, it can be wrong, and it knows "
    "nothing outside these 7 classes. Whatever it says, a spot that changes, bleeds, itches or looks unlike your "
    "other moles needs a doctor."
)
WAITING = "Add a photo of the lesion, then press **Classify**."
# A Space on basic CPU hardware has 2 cores, and one prediction's PyTorch already uses them all: a second at the same
# time would only slow both. Requests beyond the one running wait in the queue, up to MAX_QUEUE, then are turned away.
CONCURRENCY = 1
MAX_QUEUE = 64


def default_model() -> str:
    """`HF_SKIN_MODEL`, else the first model the Space's README.md lists."""
    return os.environ.get("HF_SKIN_MODEL") or metadata_load(Path(__file__).with_name("README.md"))["models"][0]


def read_upload(upload) -> Image.Image:
    """Gradio's file payload (or a path) -> an RGB image, or a `gr.Error` that says what is wrong with the file."""
    if upload is None:
        raise gr.Error("Add a photo of the skin lesion first (upload one or take one with the webcam).")
    path = upload["path"] if isinstance(upload, dict) else upload
    try:
        return load_image(path)
    except Image.DecompressionBombError:
        raise gr.Error(
            f"This image is too large to open safely (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels). "
            "Please downscale it and try again."
        ) from None
    except Exception as err:  # whatever the decoder says, the file is not an image we can use
        logger.info("rejected upload %s: %s", path, err)
        raise gr.Error(
            "This file could not be read as an image. Please upload a photo (JPEG, PNG, WebP, TIFF or BMP)."
        ) from None


def predict(classifier: SkinClassifier, upload, **metadata) -> tuple[dict[str, float], str, Image.Image]:
    """One upload + metadata -> the `gr.Label` value (full names), the summary (Markdown) and the heatmap."""
    image = read_upload(upload)
    explanation = explain(classifier, image, **metadata)  # its forward pass gives the prediction too
    probs = explanation.probabilities
    label = {display_name(dx): p for dx, p in probs.items()}
    return label, f"{summarize(probs)}\n\n*Heatmap — {explanation.caption}*", explanation.overlay


def save_heatmap(image: Image.Image, directory: Path) -> str:
    """The heatmap as a PNG file named by its content, complete before it appears under that name.

    Returned as a PIL image, Gradio would write it to a content-named file itself, but in place: a request downloading
    that file while another request rewrites the same content gets a truncated image (seen under concurrent load).
    """
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    path = directory / f"heatmap-{hashlib.sha256(data).hexdigest()[:24]}.png"
    if not path.exists():
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".{path.name}.{uuid.uuid4().hex}"
        staging.write_bytes(data)
        os.replace(staging, path)  # atomic: readers see no file or the whole file
    return str(path)


def example_rows(classifier: SkinClassifier, directory: Path, classes=("mel", "nv", "bcc", "bkl")) -> list[list]:
    """Synthetic lesions (never real patients' images) drawn at startup, one per class in `classes`."""
    root = make_synthetic_ham10000(directory, num_lesions=14, seed=0, with_masks=False)
    rows = {}
    with open(root / "HAM10000_metadata.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["dx"] in classes and row["dx"] not in rows:
                [path] = root.glob(f"HAM10000_images_part_*/{row['image_id']}.jpg")
                row["age"] = float(row["age"]) if row["age"] else None
                rows[row["dx"]] = [str(path)] + [row[field] for field in metadata_inputs(classifier)]
    return [rows[dx] for dx in classes if dx in rows]


def metadata_inputs(classifier: SkinClassifier) -> list[str]:
    """The metadata the page asks for: those of age, sex and localization that the model reads."""
    return [field for field in ("age", "sex", "localization") if field in classifier.metadata_fields]


def build_demo(classifier: SkinClassifier, model_name: str = "") -> gr.Blocks:
    """The page for `classifier`, its queue configured: `build_demo(...).launch()`."""
    fields = metadata_inputs(classifier)
    # delete_cache: uploads and heatmaps older than a day are removed, every hour.
    with gr.Blocks(title="hf-skin: skin lesion classifier (research demo)", delete_cache=(3600, 86400)) as demo:
        gr.Markdown("# Skin lesion classifier\n" + DISCLAIMER)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Photo of the skin lesion", sources=["upload", "webcam"], type="filepath")
                widgets = {}
                if fields:
                    gr.Markdown("Optional — leave as *unknown* if you do not know:")
                    with gr.Row():
                        if "age" in fields:
                            widgets["age"] = gr.Number(label="Age (years)", minimum=0, maximum=120, value=None)
                        if "sex" in fields:
                            widgets["sex"] = gr.Dropdown(SEX_LABELS, value="unknown", label="Sex")
                        if "localization" in fields:
                            widgets["localization"] = gr.Dropdown(
                                LOCALIZATION_LABELS, value="unknown", label="Body site"
                            )
                inputs = [image] + [widgets[field] for field in fields]
                submit = gr.Button("Classify", variant="primary")
                gr.Examples(
                    example_rows(classifier, Path(tempfile.mkdtemp(prefix="hf_skin_examples_"))),
                    inputs,
                    label="Examples (synthetic lesions, not real patients)",
                )
            with gr.Column():
                summary = gr.Markdown(WAITING)
                # No headline with the top class: at 19% it would read as a diagnosis; the summary says it plainly.
                label = gr.Label(
                    num_top_classes=len(classifier.labels), label="Diagnosis probabilities", show_heading=False
                )
                heatmap = gr.Image(label="Explanation heatmap", type="filepath", interactive=False)
        if model_name:
            # Any checkpoint can be served (make demo's is trained on synthetic lesions): its card says on what.
            gr.Markdown(f"Model: `{model_name}`, an hf-skin checkpoint: its model card says what it was trained on.")

        # In Gradio's cache, served from where it is written and cleared by delete_cache with the rest.
        heatmaps = Path(heatmap.GRADIO_CACHE) / "hf_skin_heatmaps"

        def run(upload, *values):
            label_value, summary_text, overlay = predict(classifier, upload, **dict(zip(fields, values)))
            return label_value, summary_text, save_heatmap(overlay, heatmaps)

        # preprocess=False: the file reaches read_upload as uploaded, so a bad one gets a clear message instead of
        # Gradio's own decoding error. Uploads still go through Gradio's cache and its path checks.
        submit.click(run, inputs, [label, summary, heatmap], api_name="predict", preprocess=False)
        # A new photo clears the last result, so that no result ever shows beside a photo it is not about.
        image.change(
            lambda: (None, WAITING, None), None, [label, summary, heatmap], api_visibility="private", queue=False
        )
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=MAX_QUEUE)


if __name__ == "__main__":
    name = default_model()
    build_demo(SkinClassifier.from_pretrained(name), model_name=name).launch()
