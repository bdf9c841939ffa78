"""The hf-skin Space: a skin-lesion photo (+ age, sex and body site for multi-input models) -> the 7 HAM10000
diagnoses with probabilities, the probability of a malignant class, and an explanation heatmap.

    HF_SKIN_MODEL=runs/demo python spaces/app.py      # a checkpoint folder or a Hub model id

Without HF_SKIN_MODEL the model is the first of `models:` in this folder's README.md (the Space's card). The limits
(upload size, photo size, queue length, how long photos are kept) are Space variables too: see `Settings`.
The work is done by hf_skin (`SkinClassifier`, `summarize`, `explain`); this file builds the page and looks after the
files it leaves on the server (`serve`).
"""

import csv
import hashlib
import html
import io
import logging
import math
import os
import signal
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from huggingface_hub import metadata_load
from PIL import Image
from starlette.exceptions import HTTPException

from hf_skin.data.provenance import is_synthetic, training_data_sentence
from hf_skin.explain import explain
from hf_skin.inference import SkinClassifier, percent, summarize
from hf_skin.labels import LOCALIZATION_LABELS, MAX_AGE, MIN_AGE, SEX_LABELS, display_name, is_valid_age
from hf_skin.processing import load_image
from hf_skin.synthetic import make_synthetic_ham10000

logger = logging.getLogger(__name__)

WAITING = "Add a photo of the lesion, then press **Classify**."
NO_PHOTO = "Add a photo of the skin lesion first (upload one or take one with the webcam)."
BUSY = "The Space is busy (too many requests are waiting). Please try again in a minute."
# A Space on basic CPU hardware has 2 cores, and one prediction's PyTorch already uses them all: a second at the same
# time would only slow both. Requests beyond the one running wait in the queue, up to `Settings.max_queue`, then are
# turned away. The page's event and the API's share one concurrency group ("model").
CONCURRENCY = 1
# The Space's own folder inside Gradio's (GRADIO_TEMP_DIR, default <tmp>/gradio): `serve` empties it at start and
# stop, so it must hold nothing but this Space's files, and a folder of our own is never another app's.
FILES_FOLDER = "hf_skin_space"


@dataclass(frozen=True)
class Settings:
    """The Space's limits, each set by a Space variable (an environment variable) or left at its default.

    Args:
        max_file_size (`int`, *optional*, defaults to 20 MB): the largest upload in bytes; `HF_SKIN_MAX_FILE_SIZE_MB`.
            A phone photo is 2-8 MB; the limit keeps a client from filling the disk.
        max_pixels (`int`, *optional*, defaults to 30 MP): the largest photo in pixels; `HF_SKIN_MAX_MEGAPIXELS`.
            A PNG of one colour is small on disk and huge in memory (a 445 kB file of 12000 × 12000 took 10 s and
            4 GB to classify); a phone photo is 12-24 MP, and the model sees a few hundred pixels a side.
        max_queue (`int`, *optional*, defaults to 64): requests that may wait behind the one running; the next is
            told the Space is busy. `HF_SKIN_MAX_QUEUE`.
        keep_files (`int`, *optional*, defaults to 600): seconds that uploads (patients' photos) and their heatmaps
            stay on the server; `HF_SKIN_KEEP_FILES_MINUTES`. Long enough to look at a result, no longer.
    """

    max_file_size: int = 20 * 2**20
    max_pixels: int = 30_000_000
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
            max_pixels=read("HF_SKIN_MAX_MEGAPIXELS", cls.max_pixels, lambda mp: int(mp * 1e6)),
            max_queue=read("HF_SKIN_MAX_QUEUE", cls.max_queue, int),
            keep_files=read("HF_SKIN_KEEP_FILES_MINUTES", cls.keep_files, lambda minutes: round(minutes * 60)),
        )

    @property
    def sweep_every(self) -> int:
        """Seconds between two sweeps of the Space's files: a tenth of `keep_files`, from 1 s to a minute."""
        return max(1, min(60, self.keep_files // 10))

    @property
    def deleted_within(self) -> str:
        """The longest a file stays, in words: it is deleted at the first sweep after `keep_files`."""
        seconds = self.keep_files + self.sweep_every
        return f"{seconds} seconds" if seconds < 120 else f"{math.ceil(seconds / 60)} minutes"


def default_model() -> str:
    """`HF_SKIN_MODEL`, else the first model the Space's README.md lists."""
    return os.environ.get("HF_SKIN_MODEL") or metadata_load(Path(__file__).with_name("README.md"))["models"][0]


def disclaimer(classifier: SkinClassifier) -> str:
    """The page's first words: not a diagnosis, what the served model learned from (its `training_data`, in
    `training_data_sentence`'s words), and what it cannot know. A model of synthetic lesions says it is a demo."""
    learned = training_data_sentence(classifier.training_data)
    if is_synthetic(classifier.training_data):
        return (
            f"**Research demo — not a diagnosis.** **{learned}** Use it to try the page, not on a lesion that worries "
            "you: a spot that changes, bleeds, itches or looks unlike your other moles needs a doctor."
        )
    return (
        f"**Research demo — not a diagnosis.** {learned} It has not been clinically validated, it can be wrong, and "
        f"it knows only the {len(classifier.labels)} diagnoses below. Whatever it says, a spot that changes, bleeds, "
        "itches or looks unlike your other moles needs a doctor."
    )


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


class NotAnImage(gr.Error):
    """An upload that no decoder reads: the page takes it off the photo box, where it shows as a broken image."""

    def __init__(self):
        super().__init__(
            "This file could not be read as an image. Please upload a photo (JPEG, PNG, WebP, TIFF or BMP)."
        )


def read_upload(upload, max_pixels: int = Settings.max_pixels) -> Image.Image:
    """Gradio's file payload (or a path) -> an RGB image, or a `gr.Error` that says what is wrong with the file.

    The size in the file's header is checked before any pixel is decoded: the work of a request is bounded by
    `max_pixels` (decoding and preprocessing take about 18 bytes a pixel), whatever the file's size on disk.
    """
    if upload is None:
        raise gr.Error(NO_PHOTO)
    path = upload["path"] if isinstance(upload, dict) else upload
    try:
        with Image.open(path) as header:  # reads the header only
            width, height = header.size
        if width * height > max_pixels:
            raise gr.Error(
                f"This photo is {width:,} × {height:,} pixels ({width * height / 1e6:.1f} megapixels); this Space "
                f"takes photos up to {max_pixels / 1e6:g} megapixels. Please send a smaller copy: the model sees the "
                "photo at a few hundred pixels a side anyway."
            )
        return load_image(path)
    except Image.DecompressionBombError:
        # The on-device page says the same words (spaces/ondevice/app.js); it has no other limit than PIL's.
        raise gr.Error(
            f"This image is too large to open safely (over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} megapixels). "
            "Please downscale it and try again."
        ) from None
    except gr.Error:
        raise
    except Exception as err:  # whatever the decoder says, the file is not an image we can use
        logger.info("rejected upload %s: %s", path, err)
        raise NotAnImage() from None


NO_HEATMAP = (
    "*No heatmap: this Space serves an exported (ONNX) model, and the heatmap needs the PyTorch model's gradients. "
    "Serve the PyTorch checkpoint to see one.*"
)


def predict(
    classifier: SkinClassifier, upload, max_pixels: int = Settings.max_pixels, **metadata
) -> tuple[dict[str, float], str, Image.Image | None]:
    """One upload + metadata -> the probabilities by full name, the summary (Markdown) and the heatmap (`None` for
    an exported model, which has no gradients to explain it with)."""
    image = read_upload(upload, max_pixels)
    if classifier.is_onnx:
        [probs] = classifier.predict(image, **metadata)
        caption, overlay = NO_HEATMAP, None
    else:
        explanation = explain(classifier, image, **metadata)  # its forward pass gives the prediction too
        probs, caption, overlay = explanation.probabilities, f"*Heatmap — {explanation.caption}*", explanation.overlay
    label = {display_name(dx): p for dx, p in probs.items()}
    learned = classifier.training_data
    summary = summarize(probs, operating_point=classifier.operating_point, training_data=learned)
    # Every result names what the model learned from: summarize opens with it for synthetic data, the rest say it here.
    source = "" if is_synthetic(learned) else f"\n\n*{training_data_sentence(learned)}*"
    return label, f"{summary}\n\n{caption}{source}", overlay


def probabilities_html(label: dict[str, float] | None) -> str:
    """The probabilities as a person reads them: one bar per diagnosis, most probable first, its name and whole
    percent (`hf_skin.inference.percent`: never "0%" or "100%") on a line above a bar as wide as the column, so that
    it reads on a phone as on a desktop. Styled inline: the page needs no stylesheet for it."""
    if not label:
        return ""
    rows = "".join(
        f'<div role="listitem" style="margin:.5em 0"><div style="{_LINE}"><span>{html.escape(name)}</span>'
        f'<span style="{_NUMBER}">{percent(p)}</span></div>'
        f'<div style="{_BAR}"><div style="{_FILL}width:{100 * p:.1f}%"></div></div></div>'
        for name, p in sorted(label.items(), key=lambda item: -item[1])
    )
    return f'<div class="hf-skin-probabilities" role="list" aria-label="Diagnosis probabilities">{rows}</div>'


_LINE = "display:flex;justify-content:space-between;gap:.75em;align-items:baseline"
_NUMBER = "font-variant-numeric:tabular-nums;font-weight:600;white-space:nowrap"
_BAR = "background:#e5e7eb;border-radius:4px;height:.75em;overflow:hidden;margin-top:.2em"
_FILL = "height:100%;background:#f97316;"


# After Classify, the result into view where it is not (on a phone it is below the photo and its inputs). Gradio's
# own `scroll_to_output` does nothing in Gradio 6.31's page.
SCROLL_TO_RESULT = """() => {
    const result = document.getElementById("hf-skin-result");
    const top = result ? result.getBoundingClientRect().top : 0;
    if (result && (top < 0 || top > window.innerHeight - 120)) result.scrollIntoView({block: "start"});
}"""


def not_classified(message: str) -> str:
    """An error as the page shows it: in the result's place, where it stays until the next photo."""
    return f"### Not classified\n\n{message}"


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
    variables (`Settings.from_env()`).

    The page and the API share one function but not its errors: the API's `/predict` raises them (`gr.Error`, which
    `gradio_client` raises as `AppError`), the page shows them in the result's place, where they stay.
    """
    settings = settings or Settings.from_env()
    fields = metadata_inputs(classifier)
    with gr.Blocks(
        title="hf-skin: skin lesion classifier (research demo)",
        # Uploads and heatmaps are patients' photos: each sweep deletes those older than keep_files (`serve` sweeps
        # the Space's whole folder besides, which catches what Gradio does not count as this page's).
        delete_cache=(settings.sweep_every, settings.keep_files),
    ) as demo:
        gr.Markdown("# Skin lesion classifier\n" + disclaimer(classifier))
        # On a phone the columns stack: the photo and Classify, then at once the result (the examples come after
        # both), which SCROLL_TO_RESULT brings into view when it lands.
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                image = gr.Image(
                    label="Photo of the skin lesion", sources=["upload", "webcam"], type="filepath", height=300
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
                gr.Markdown(
                    f"Photos up to {round(settings.max_file_size / 2**20, 1):g} MB and "
                    f"{settings.max_pixels / 1e6:g} megapixels. Your photo and its heatmap are deleted from this "
                    f"server within {settings.deleted_within}, and when the Space stops."
                )
            with gr.Column(min_width=300):
                summary = gr.Markdown(WAITING, elem_id="hf-skin-result")
                # Not gr.Label: it rounds to "100%" and "0%", which a model this far from perfect cannot mean; and
                # no headline with the top class: at 19% it would read as a diagnosis, the summary says it plainly.
                gr.Markdown("**Diagnosis probabilities**")
                shown = gr.HTML(probabilities_html(None))
                gr.Markdown(calibration_note(classifier))
                # The exact probabilities, for API clients (`/predict`'s first output); the page shows `shown`.
                label = gr.Label(num_top_classes=len(classifier.labels), visible=False)
                heatmap = gr.Image(label="Explanation heatmap", type="filepath", interactive=False)
        # Drawn into a folder that goes as soon as Gradio has copied the examples into its cache (at construction).
        with tempfile.TemporaryDirectory(prefix="hf_skin_examples_") as examples:
            gr.Examples(
                example_rows(classifier, Path(examples)),
                inputs,
                label="Examples (synthetic lesions, not real patients)",
                cache_examples=False,
            )
        if model_name:
            gr.Markdown(f"Model: `{model_name}`, an hf-skin checkpoint; its model card has its test results.")

        # Gradio's upload folder, where uploads land. The heatmaps go there too: served from where they are written,
        # and deleted with the uploads.
        uploads = Path(image.GRADIO_CACHE)
        heatmaps = uploads / "hf_skin_heatmaps"

        def run(upload, *values):
            path = uploaded_file(upload, uploads, settings)
            metadata = dict(zip(fields, values))
            if "age" in metadata:
                metadata["age"] = parse_age(metadata["age"])
            label_value, summary_text, overlay = predict(classifier, path, settings.max_pixels, **metadata)
            heatmap_file = save_heatmap(overlay, heatmaps) if overlay is not None else None
            return label_value, summary_text, heatmap_file, probabilities_html(label_value)

        def run_on_page(upload, *values):
            """`run` for the page: an error in the result's place instead of a toast that goes after 10 s, and an
            unreadable file off the photo box."""
            photo = gr.skip()
            try:
                return *run(upload, *values), photo
            except NotAnImage as err:
                message, photo = err.message, None
            except gr.Error as err:
                message = err.message
            except Exception:  # a bug or the machine: logged here, and the person is not left with a spinner
                logger.exception("classifying a photo failed")
                message = "Something went wrong on the server while classifying this photo. Please try again."
            return None, not_classified(message), None, "", photo

        # preprocess=False: the file reaches read_upload as uploaded, so a bad one gets a clear message instead of
        # Gradio's own decoding error; uploaded_file does the path check that Gradio leaves out then.
        outputs = [label, summary, heatmap, shown]
        events = dict(preprocess=False, concurrency_id="model")
        page_outputs = outputs + [image]
        submit.click(run_on_page, inputs, page_outputs, api_visibility="private", **events).then(
            None, js=SCROLL_TO_RESULT, api_visibility="private", queue=False
        )
        # The API's endpoint, on a trigger that the page never shows.
        gr.Button(visible=False).click(run, inputs, outputs, api_name="predict", **events)

        # A new photo (upload, webcam, example) or a photo cleared by hand clears the last result, so that no result
        # shows beside a photo it is not about; a photo taken off by run_on_page leaves its message.
        def new_photo(photo):
            return (None, WAITING, None, "") if photo is not None else (gr.skip(),) * 4

        image.change(new_photo, image, outputs, api_visibility="private", queue=False, preprocess=False)
        image.clear(lambda: (None, WAITING, None, ""), None, outputs, api_visibility="private", queue=False)
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


def files_folder() -> Path:
    """The Space's own folder for uploads, heatmaps and Gradio's copies: `hf_skin_space` in Gradio's temp folder
    (`GRADIO_TEMP_DIR`, default `<tmp>/gradio`), made Gradio's temp folder for this process."""
    base = Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").absolute()
    folder = base if base.name == FILES_FOLDER else base / FILES_FOLDER
    os.environ["GRADIO_TEMP_DIR"] = str(folder)  # read by Gradio as each component and the server are made
    return folder


def sweep(folder: Path, older_than: float | None = None, keep=frozenset()) -> int:
    """Deletes the files under `folder` whose ctime is more than `older_than` seconds ago (all with `None`), except
    those in `keep` (real paths), and the folders left empty; the number of files deleted. Gradio's delete_cache
    counts only the files this process made; this sweep counts what is on the disk."""
    now, deleted = time.time(), 0
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            try:
                if os.path.realpath(path) in keep or (
                    older_than is not None and now - os.lstat(path).st_ctime <= older_than
                ):
                    continue
                os.unlink(path)
                deleted += 1
            except FileNotFoundError:  # Gradio's own sweep got there first
                continue
        for name in dirs:
            path = os.path.join(root, name)
            try:
                # An upload makes its folder and moves the file in at once: a folder that new may be about to fill.
                if older_than is None or now - os.lstat(path).st_mtime > 1:
                    os.rmdir(path)
            except OSError:  # not empty, or gone
                continue
    return deleted


def kept_files(demo: gr.Blocks) -> frozenset[str]:
    """The files the page shows to everyone (the examples' copies), which the sweeps leave while it runs."""
    return frozenset(
        os.path.realpath(path) for block in demo.blocks.values() for path in getattr(block, "keep_in_cache", ())
    )


def _stop(signum, frame):
    # SIGTERM (kill, docker stop, systemd) and SIGHUP end Python without cleaning up; as Ctrl-C they close the server
    # (Gradio's launch catches KeyboardInterrupt) and let `serve` empty the Space's folder on the way out.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def serve(model_name: str | None = None, settings: Settings | None = None) -> None:
    """The Space as `python spaces/app.py` runs it: the page for `model_name` (default `default_model()`), and the
    files it writes deleted as the page promises. The Space's folder (`files_folder`) is emptied at start (an
    earlier process that was killed leaves its files), swept every `settings.sweep_every` seconds while the page runs,
    and emptied again when the process stops on SIGTERM, SIGHUP or Ctrl-C. Only a SIGKILL or a power cut leaves files
    behind, and the next start deletes them."""
    settings = settings or Settings.from_env()
    folder = files_folder()
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None:
            signal.signal(signum, _stop)
    stopped = threading.Event()
    try:
        if deleted := sweep(folder):
            logger.info("deleted %d files an earlier run of the Space left in %s", deleted, folder)
        name = model_name or default_model()
        demo = build_demo(SkinClassifier.from_pretrained(name), model_name=name, settings=settings)
        keep = kept_files(demo)

        def sweep_on_schedule():
            while not stopped.wait(settings.sweep_every):
                sweep(folder, settings.keep_files, keep)

        threading.Thread(target=sweep_on_schedule, name="hf-skin-sweep", daemon=True).start()
        launch(demo, settings)
    except KeyboardInterrupt:
        pass
    finally:
        stopped.set()
        sweep(folder)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    serve()
