"""The hf-skin Space: a skin-lesion photo (+ age, sex and body site for multi-input models) -> the 7 HAM10000
diagnoses with probabilities, the probability of a malignant class, and an explanation heatmap.

    HF_SKIN_MODEL=runs/demo python spaces/app.py      # a checkpoint folder or a Hub model id

Without HF_SKIN_MODEL the model is the first of `models:` in this folder's README.md (the Space's card). The limits
(upload size, queue length, how long photos are kept) are Space variables too: see `Settings`.
The work is done by hf_skin (`SkinClassifier`, `summarize`, `explain`); this file builds the page.
"""

import csv
import hashlib
import html
import io
import logging
import math
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from huggingface_hub import metadata_load
from PIL import Image
from starlette.exceptions import HTTPException

from hf_skin.explain import explain
from hf_skin.inference import SkinClassifier, percent, summarize
from hf_skin.labels import LOCALIZATION_LABELS, MAX_AGE, MIN_AGE, SEX_LABELS, display_name, is_valid_age
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
NO_PHOTO = "Add a photo of the skin lesion first (upload one or take one with the webcam)."
BUSY = "The Space is busy (too many requests are waiting). Please try again in a minute."
# A Space on basic CPU hardware has 2 cores, and one prediction's PyTorch already uses them all: a second at the same
# time would only slow both. Requests beyond the one running wait in the queue, up to `Settings.max_queue`, then are
# turned away.
CONCURRENCY = 1


@dataclass(frozen=True)
class Settings:
    """The Space's limits, each set by a Space variable (an environment variable) or left at its default.

    Args:
        max_file_size (`int`, *optional*, defaults to 20 MB): the largest upload in bytes; `HF_SKIN_MAX_FILE_SIZE_MB`.
            A phone photo is 2-8 MB; the limit keeps a client from filling the disk.
        max_queue (`int`, *optional*, defaults to 64): requests that may wait behind the one running; the next is
            told the Space is busy. `HF_SKIN_MAX_QUEUE`.
        keep_files (`int`, *optional*, defaults to 600): seconds that uploads (patients' photos) and their heatmaps
            stay on the server; `HF_SKIN_KEEP_FILES_MINUTES`. Long enough to look at a result, no longer.
    """

    max_file_size: int = 20 * 2**20
    max_queue: int = 64
    keep_files: int = 600

    @classmethod
    def from_env(cls) -> "Settings":
        def read(name: str, default, to_value):
            text = os.environ.get(name, "").strip()
            if not text:
                return default
            try:
                value = to_value(float(text))
            except (ValueError, OverflowError):  # not a number, NaN or infinity
                value = 0
            if value < 1:
                raise ValueError(f"{name}={text!r} is not a positive number; unset it for the default ({default})")
            return value

        return cls(
            max_file_size=read("HF_SKIN_MAX_FILE_SIZE_MB", cls.max_file_size, lambda mb: int(mb * 2**20)),
            max_queue=read("HF_SKIN_MAX_QUEUE", cls.max_queue, int),
            keep_files=read("HF_SKIN_KEEP_FILES_MINUTES", cls.keep_files, lambda minutes: round(minutes * 60)),
        )

    @property
    def sweep_every(self) -> int:
        """Seconds between two sweeps of Gradio's cache: a tenth of `keep_files`, from 1 s to a minute."""
        return max(1, min(60, self.keep_files // 10))

    @property
    def deleted_within(self) -> str:
        """The longest a file stays, in words: it is deleted at the first sweep after `keep_files`."""
        seconds = self.keep_files + self.sweep_every
        return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


def default_model() -> str:
    """`HF_SKIN_MODEL`, else the first model the Space's README.md lists."""
    return os.environ.get("HF_SKIN_MODEL") or metadata_load(Path(__file__).with_name("README.md"))["models"][0]


def uploaded_file(upload, folder: Path, settings: Settings) -> str:
    """The path that a request's file payload names, if it is a file uploaded to this Space (in Gradio's upload
    `folder`); otherwise a `gr.Error`, and the file is never opened.

    The payload comes from the client: anyone calling the API can name any file on the server in it, and Gradio checks
    only payloads that carry its `meta` marker (`preprocess=False` leaves the rest to us).
    """
    path = upload.get("path") if isinstance(upload, dict) else upload
    if not path:
        raise gr.Error(NO_PHOTO)
    resolved = Path(path).resolve() if isinstance(path, str) else None  # resolve(): no "..", no symlink out
    if resolved is None or not resolved.is_relative_to(Path(folder).resolve()):
        logger.warning("refused a request for %r, which is not an upload", path)
        raise gr.Error("Only a photo uploaded to this page can be classified: please upload the photo.")
    if not resolved.is_file():
        raise gr.Error(
            f"This photo is no longer on the server (photos are deleted within {settings.deleted_within} of their "
            "upload): please upload it again."
        )
    return str(resolved)


def parse_age(value) -> float | None:
    """The age box's text (or an API client's number) -> years, `None` when empty; a `gr.Error` for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        age = float(value)
    except (TypeError, ValueError):
        age = math.nan
    if not is_valid_age(age):
        raise gr.Error(
            f"Age “{value}” is not a number of years from {MIN_AGE} to {MAX_AGE}. "
            "Leave the box empty if it is unknown."
        )
    return age


def read_upload(upload) -> Image.Image:
    """Gradio's file payload (or a path) -> an RGB image, or a `gr.Error` that says what is wrong with the file."""
    if upload is None:
        raise gr.Error(NO_PHOTO)
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


NO_HEATMAP = (
    "*No heatmap: this Space serves an exported (ONNX) model, and the heatmap needs the PyTorch model's gradients. "
    "Serve the PyTorch checkpoint to see one.*"
)


def predict(classifier: SkinClassifier, upload, **metadata) -> tuple[dict[str, float], str, Image.Image | None]:
    """One upload + metadata -> the probabilities by full name, the summary (Markdown) and the heatmap (`None` for
    an exported model, which has no gradients to explain it with)."""
    image = read_upload(upload)
    if classifier.is_onnx:
        [probs] = classifier.predict(image, **metadata)
        caption, overlay = NO_HEATMAP, None
    else:
        explanation = explain(classifier, image, **metadata)  # its forward pass gives the prediction too
        probs, caption, overlay = explanation.probabilities, f"*Heatmap — {explanation.caption}*", explanation.overlay
    label = {display_name(dx): p for dx, p in probs.items()}
    return label, f"{summarize(probs, operating_point=classifier.operating_point)}\n\n{caption}", overlay


def probabilities_html(label: dict[str, float] | None) -> str:
    """The probabilities as a person reads them: one bar per diagnosis, most probable first, in whole percent that
    never say "0%" or "100%" (`hf_skin.inference.percent`). Styled inline: the page needs no stylesheet for it."""
    if not label:
        return ""
    rows = "".join(
        f'<div style="{_ROW}"><span>{html.escape(name)}</span>'
        f'<span style="{_BAR}"><span style="{_FILL}width:{100 * p:.1f}%"></span></span>'
        f'<span style="text-align:right;font-variant-numeric:tabular-nums">{percent(p)}</span></div>'
        for name, p in sorted(label.items(), key=lambda item: -item[1])
    )
    return f'<div class="hf-skin-probabilities" role="list" aria-label="Diagnosis probabilities">{rows}</div>'


_ROW = "display:grid;grid-template-columns:minmax(7em,15em) 1fr 3.2em;gap:.5em;align-items:center;margin:.35em 0"
_BAR = "background:#e5e7eb;border-radius:4px;height:.9em;overflow:hidden"
_FILL = "display:block;height:100%;background:#f97316;"


def save_heatmap(image: Image.Image, directory: Path) -> str:
    """The heatmap as a PNG file named by its content, complete before it appears under that name.

    Returned as a PIL image, Gradio would write it to a content-named file itself, but in place: a request downloading
    that file while another request rewrites the same content gets a truncated image (seen under concurrent load).
    """
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    data = buffer.getvalue()
    path = directory / f"heatmap-{hashlib.sha256(data).hexdigest()[:24]}.png"
    try:
        # The same heatmap again (the same photo): its age restarts, or the cache's sweep, which goes by ctime, could
        # delete it before this request's page has fetched it.
        os.utime(path)
    except FileNotFoundError:
        directory.mkdir(parents=True, exist_ok=True)
        staging = directory / f".{path.name}.{uuid.uuid4().hex}"
        staging.write_bytes(data)
        os.replace(staging, path)  # atomic: readers see no file or the whole file
    return str(path)


def calibration_note(classifier: SkinClassifier) -> str:
    """The page's plain sentence on what the probabilities are calibrated for (`Calibration.describe`)."""
    calibration = classifier.calibration
    if calibration is None:
        return (
            "*These probabilities are the model's raw outputs, not calibrated: they may be more or less sure than "
            "the model's record justifies.*"
        )
    return f"*{calibration.describe(classifier.labels)}*"


def example_rows(classifier: SkinClassifier, directory: Path, classes=("mel", "nv", "bcc", "bkl")) -> list[list]:
    """Synthetic lesions (never real patients' images) drawn at startup, one per class in `classes`."""
    root = make_synthetic_ham10000(directory, num_lesions=14, seed=0, with_masks=False)
    rows = {}
    with open(root / "HAM10000_metadata.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["dx"] in classes and row["dx"] not in rows:
                [path] = root.glob(f"HAM10000_images_part_*/{row['image_id']}.jpg")
                row["age"] = f"{float(row['age']):g}" if row["age"] else None  # as a person types it: "45"
                rows[row["dx"]] = [str(path)] + [row[field] for field in metadata_inputs(classifier)]
    return [rows[dx] for dx in classes if dx in rows]


def metadata_inputs(classifier: SkinClassifier) -> list[str]:
    """The metadata the page asks for: those of age, sex and localization that the model reads."""
    return [field for field in ("age", "sex", "localization") if field in classifier.metadata_fields]


def build_demo(classifier: SkinClassifier, model_name: str = "", settings: Settings | None = None) -> gr.Blocks:
    """The page for `classifier`, its queue configured: `launch(build_demo(...))`. `settings` defaults to the Space's
    variables (`Settings.from_env()`)."""
    settings = settings or Settings.from_env()
    fields = metadata_inputs(classifier)
    with gr.Blocks(
        title="hf-skin: skin lesion classifier (research demo)",
        # Uploads and heatmaps are patients' photos: each sweep deletes those older than keep_files.
        delete_cache=(settings.sweep_every, settings.keep_files),
    ) as demo:
        gr.Markdown("# Skin lesion classifier\n" + DISCLAIMER)
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="Photo of the skin lesion", sources=["upload", "webcam"], type="filepath")
                gr.Markdown(
                    f"Photos up to {round(settings.max_file_size / 2**20, 1):g} MB. Your photo and its heatmap are "
                    f"deleted from this server within {settings.deleted_within}, and whenever the Space restarts."
                )
                widgets = {}
                if fields:
                    gr.Markdown("Optional — leave as *unknown* if you do not know:")
                    with gr.Row():
                        if "age" in fields:
                            # A text box: gr.Number shows an empty value as 0 and sends 0 (Gradio 6's page), and 0
                            # is a newborn's age, not "unknown".
                            widgets["age"] = gr.Textbox(label="Age (years)", placeholder="unknown", max_lines=1)
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
                # Not gr.Label: it rounds to "100%" and "0%", which a model this far from perfect cannot mean; and
                # no headline with the top class: at 19% it would read as a diagnosis, the summary says it plainly.
                gr.Markdown("**Diagnosis probabilities**")
                shown = gr.HTML(probabilities_html(None))
                gr.Markdown(calibration_note(classifier))
                # The exact probabilities, for API clients (`/predict`'s first output); the page shows `shown`.
                label = gr.Label(num_top_classes=len(classifier.labels), visible=False)
                heatmap = gr.Image(label="Explanation heatmap", type="filepath", interactive=False)
        if model_name:
            # Any checkpoint can be served (make demo's is trained on synthetic lesions): its card says on what.
            gr.Markdown(f"Model: `{model_name}`, an hf-skin checkpoint: its model card says what it was trained on.")

        # Gradio's upload folder, where uploads land. The heatmaps go there too: served from where they are written,
        # and deleted by delete_cache with the uploads.
        uploads = Path(image.GRADIO_CACHE)
        heatmaps = uploads / "hf_skin_heatmaps"

        def run(upload, *values):
            path = uploaded_file(upload, uploads, settings)
            metadata = dict(zip(fields, values))
            if "age" in metadata:
                metadata["age"] = parse_age(metadata["age"])
            label_value, summary_text, overlay = predict(classifier, path, **metadata)
            heatmap_file = save_heatmap(overlay, heatmaps) if overlay is not None else None
            return label_value, summary_text, heatmap_file, probabilities_html(label_value)

        # preprocess=False: the file reaches read_upload as uploaded, so a bad one gets a clear message instead of
        # Gradio's own decoding error; uploaded_file does the path check that Gradio leaves out then.
        outputs = [label, summary, heatmap, shown]
        submit.click(run, inputs, outputs, api_name="predict", preprocess=False)
        # A new photo clears the last result, so that no result ever shows beside a photo it is not about.
        image.change(lambda: (None, WAITING, None, ""), None, outputs, api_visibility="private", queue=False)
    return demo.queue(default_concurrency_limit=CONCURRENCY, max_size=settings.max_queue)


async def _busy_or_default(request, exc: HTTPException):
    """A full queue's refusal in plain words and with a Retry-After, for clients of the HTTP API; every other HTTP
    error as FastAPI sends it. (The page and gradio_client have their own words for a 503: "This application is
    currently busy. Please try again." and "Queue is full! Please try again.")"""
    if exc.status_code == 503 and str(exc.detail).startswith("Queue is full"):
        return JSONResponse({"detail": BUSY}, status_code=503, headers={"Retry-After": "60"})
    return await http_exception_handler(request, exc)


def launch(demo: gr.Blocks, settings: Settings | None = None, **kwargs):
    """`demo.launch(**kwargs)` with the Space's limits (`settings`, default the Space's variables)."""
    settings = settings or Settings.from_env()
    app_kwargs = kwargs.pop("app_kwargs", None) or {}
    app_kwargs.setdefault("exception_handlers", {})[HTTPException] = _busy_or_default
    return demo.launch(max_file_size=settings.max_file_size, app_kwargs=app_kwargs, **kwargs)


if __name__ == "__main__":
    name, settings = default_model(), Settings.from_env()
    launch(build_demo(SkinClassifier.from_pretrained(name), model_name=name, settings=settings), settings)
