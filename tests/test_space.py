"""The Gradio Space (spaces/app.py), launched on 127.0.0.1 and called through gradio_client, as a user's script calls
it, and through raw HTTP where a client can send what gradio_client never would."""

import configparser
import contextlib
import html
import io
import json
import os
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio
import httpx
import numpy as np
import pytest
from conftest import load_space_app, recording_classifier, serve_space
from gradio_client import Client, handle_file
from huggingface_hub import metadata_load
from packaging.requirements import Requirement
from PIL import Image

from hf_skin.data import DX_LABELS, MALIGNANT_DX
from hf_skin.inference import SkinClassifier, display_name, percent

SPACE = Path(__file__).resolve().parents[1] / "spaces"


@pytest.fixture(scope="module")
def image_only_space(image_only_checkpoint):
    with serve_space(image_only_checkpoint, recording_classifier(image_only_checkpoint)) as space:
        yield space


@pytest.fixture(scope="module")
def image_only_client(image_only_space):
    return Client(image_only_space.url, verbose=False)


@pytest.fixture(scope="module")
def multi_input_client(multi_input_checkpoint):
    with serve_space(multi_input_checkpoint) as space:
        yield Client(space.url, verbose=False)


# The Space's variables, set small so that a test can go past them: a 0.1 MB upload limit, one place in the queue.
LIMITS = {"HF_SKIN_MAX_FILE_SIZE_MB": "0.1", "HF_SKIN_MAX_QUEUE": "1"}


@pytest.fixture(scope="module")
def limited_space(image_only_checkpoint):
    with serve_space(image_only_checkpoint, recording_classifier(image_only_checkpoint), env=LIMITS) as space:
        yield space


def photo(width=300, height=200, seed=0) -> Image.Image:
    """A brownish blob on skin tone with noise: something between a lesion and random pixels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((cols - width * 0.4) / (width * 0.2)) ** 2 + ((rows - height * 0.5) / (height * 0.25)) ** 2))
    pixels = np.array([210, 160, 150]) * (1 - 0.6 * blob[..., None]) + rng.normal(0, 8, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def save(image: Image.Image, path: Path, **kwargs) -> str:
    image.save(path, **kwargs)
    return handle_file(str(path))


def probabilities(label: dict) -> dict[str, float]:
    return {row["label"]: row["confidence"] for row in label["confidences"]}


def check_result(result, size: tuple[int, int]) -> dict[str, float]:
    """7 classes by full name summing to 1, a summary naming the malignant probability, a heatmap of `size`."""
    label, summary, heatmap, shown = result
    probs = probabilities(label)
    assert set(probs) == {display_name(dx) for dx in DX_LABELS}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    malignant = sum(probs[display_name(dx)] for dx in MALIGNANT_DX)
    assert "Probability of a malignant class" in summary and f"**{percent(malignant)}**" in summary
    # What the page shows: every class with its percentage as a person reads it, never 0% or 100%
    for name, p in probs.items():
        assert f"<span>{html.escape(name)}</span>" in shown and f">{html.escape(percent(p))}</span>" in shown
    assert ">0%<" not in shown and ">100%<" not in shown
    assert ("Uncertain — this needs a dermatologist's eyes" in summary) == (max(probs.values()) < 0.5)
    with Image.open(heatmap) as image:
        assert image.size == size
    return probs


def api_parameters(client: Client) -> list[str]:
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/predict"]
    return [parameter["parameter_name"] for parameter in endpoint["parameters"]]


def test_image_only_space_gives_the_models_probabilities_and_a_heatmap(
    image_only_client, image_only_checkpoint, tmp_path
):
    assert len(api_parameters(image_only_client)) == 1  # the image: no metadata for an image-only model
    image = photo()
    result = image_only_client.predict(save(image, tmp_path / "lesion.jpg", quality=95), api_name="/predict")
    probs = check_result(result, (300, 200))
    [expected] = SkinClassifier.from_pretrained(image_only_checkpoint).predict(tmp_path / "lesion.jpg")
    assert probs == pytest.approx({display_name(dx): p for dx, p in expected.items()}, abs=1e-5)
    assert "Grad-CAM for" in result[1]
    # The heatmap is coloured over the photo: it is not the photo itself.
    with Image.open(result[2]) as heatmap:
        assert np.abs(np.asarray(heatmap.convert("RGB"), float) - np.asarray(image, float)).mean() > 10


def test_multi_input_space_reads_age_sex_and_body_site(multi_input_client, multi_input_checkpoint, tmp_path):
    assert len(api_parameters(multi_input_client)) == 4
    upload = save(photo(), tmp_path / "lesion.png")
    given = check_result(multi_input_client.predict(upload, 45, "female", "back", api_name="/predict"), (300, 200))
    unknown = check_result(
        multi_input_client.predict(upload, None, "unknown", "unknown", api_name="/predict"), (300, 200)
    )
    [expected] = SkinClassifier.from_pretrained(multi_input_checkpoint).predict(
        tmp_path / "lesion.png", age=45, sex="female", localization="back"
    )
    assert given == pytest.approx({display_name(dx): p for dx, p in expected.items()}, abs=1e-5)
    assert given != pytest.approx(unknown, abs=1e-4)  # the metadata reaches the model


@pytest.mark.parametrize("age", ["abc", "130", "-1", "nan"])
def test_an_age_that_is_not_one_gets_a_clear_message(multi_input_client, tmp_path, age):
    """Not silently read as "unknown": the person meant something, and is told what the box takes."""
    from gradio_client.exceptions import AppError

    upload = save(photo(), tmp_path / "lesion.png")
    with pytest.raises(AppError, match="is not a number of years from 0 to 120. Leave the box empty if it is unknown"):
        multi_input_client.predict(upload, age, "unknown", "unknown", api_name="/predict")
    check_result(multi_input_client.predict(upload, "", "unknown", "unknown", api_name="/predict"), (300, 200))


def decompression_bomb(path: Path, side: int = 20_000) -> str:
    """A 100-byte PNG that claims to be side × side pixels (400 MP for 20,000): PIL refuses it before decoding."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", side, side)  # IHDR's width and height, after the signature and chunk header
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR's checksum over its type and data
    path.write_bytes(bytes(data))
    return handle_file(str(path))


@pytest.mark.parametrize(
    "make_file, message",
    [
        (lambda tmp: None, "Add a photo"),
        (lambda tmp: save_bytes(tmp / "notes.txt", b"not an image"), "could not be read as an image"),
        (
            lambda tmp: save_bytes(tmp / "lesion.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 64),
            "could not be read as an image",
        ),
        (lambda tmp: decompression_bomb(tmp / "bomb.png"), "too large to open safely"),
        (
            lambda tmp: save(Image.new("RGB", (7_000, 5_000), (200, 150, 140)), tmp / "flat.png"),
            r"This photo is 7,000 × 5,000 pixels \(35.0 megapixels\); this Space takes photos up to 30 megapixels",
        ),
    ],
    ids=["no-image", "text-file", "broken-jpeg", "decompression-bomb", "over-30-megapixels"],
)
def test_bad_input_gets_a_clear_message_and_the_space_keeps_serving(
    image_only_space, image_only_client, tmp_path, monkeypatch, make_file, message
):
    """A bad file is refused with a message that says what to do. A photo over the pixel limit (a one-colour PNG of
    35 MP is 100 kB on disk and over half a GB in memory) is refused from its header: no pixel is decoded."""
    from gradio_client.exceptions import AppError

    app, decoded = image_only_space.app, []
    load_image = app.load_image
    monkeypatch.setattr(app, "load_image", lambda path, *a, **k: decoded.append(path) or load_image(path, *a, **k))
    upload = make_file(tmp_path)
    with pytest.raises(AppError, match=message):
        image_only_client.predict(upload, api_name="/predict")
    if "megapixels" in message:
        assert decoded == []
    check_result(image_only_client.predict(save(photo(), tmp_path / "ok.jpg"), api_name="/predict"), (300, 200))


def test_a_photo_at_the_pixel_limit_is_read_and_one_pixel_more_is_not(tmp_path):
    app = load_space_app()
    at_limit = tmp_path / "at_limit.png"
    Image.new("RGB", (40, 25), (200, 150, 140)).save(at_limit)
    assert app.read_upload(str(at_limit), max_pixels=1_000).size == (40, 25)
    with pytest.raises(gradio.Error, match="This photo is 40 × 25 pixels"):
        app.read_upload(str(at_limit), max_pixels=999)


def save_bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return handle_file(str(path))


def test_image_modes_and_exif_rotation_are_handled(image_only_client, image_only_checkpoint, tmp_path):
    """Grey, transparent, CMYK and 16-bit files give the prediction of the picture they show; a photo taken with the
    camera held sideways is turned upright (EXIF orientation) before the model and the heatmap see it."""
    classifier = SkinClassifier.from_pretrained(image_only_checkpoint)
    image = photo()

    def same_as(upload, picture: Image.Image, size=(300, 200), tol=1e-4):
        probs = check_result(image_only_client.predict(upload, api_name="/predict"), size)
        [expected] = classifier.predict(picture)
        assert probs == pytest.approx({display_name(dx): p for dx, p in expected.items()}, abs=tol)

    grey = image.convert("L")
    same_as(save(grey, tmp_path / "grey.png"), grey.convert("RGB"))
    opaque = image.convert("RGBA")
    same_as(save(opaque, tmp_path / "rgba.png"), image)
    cmyk = image.convert("CMYK")
    same_as(save(cmyk, tmp_path / "cmyk.jpg", quality=100), Image.open(tmp_path / "cmyk.jpg").convert("RGB"))
    grey16 = Image.fromarray(np.asarray(grey, dtype=np.uint16) * 257)  # full 16-bit range, as scanners write it
    same_as(save(grey16, tmp_path / "grey16.png"), grey.convert("RGB"), tol=1e-3)

    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90° clockwise
    sideways = image.transpose(Image.Transpose.ROTATE_90)  # what a camera held sideways stores: 200 × 300
    upload = save(sideways, tmp_path / "sideways.jpg", exif=exif.tobytes(), quality=95)
    upright = Image.open(tmp_path / "sideways.jpg").transpose(Image.Transpose.ROTATE_270)
    del upright.info["exif"]  # transpose() keeps the orientation tag, which would turn the image once more
    same_as(upload, upright, size=(300, 200))


def test_concurrent_requests_wait_in_the_queue_and_run_one_at_a_time(
    image_only_space, image_only_client, tmp_path, monkeypatch
):
    """8 requests at once all succeed, and the Space ran them one after the other: no prediction started before the
    one before it had finished (what CONCURRENCY = 1 promises: one PyTorch call using all the cores)."""
    app, spans = image_only_space.app, []
    predict = app.predict

    def timed_predict(*args, **kwargs):
        start = time.monotonic()
        time.sleep(0.05)  # widens each prediction, so that two running at once could not miss each other
        try:
            return predict(*args, **kwargs)
        finally:
            spans.append((start, time.monotonic()))

    monkeypatch.setattr(app, "predict", timed_predict)  # the page's handler looks predict up when it runs
    upload = save(photo(), tmp_path / "lesion.jpg")
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(image_only_client.predict, upload, api_name="/predict") for _ in range(8)]
        results = [job.result(timeout=120) for job in jobs]
    assert all(probabilities(r[0]) == pytest.approx(probabilities(results[0][0]), abs=1e-6) for r in results)
    assert len(spans) == 8
    spans.sort()
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert not overlaps, f"{len(overlaps)} predictions started before the one before them had finished"


def test_examples_are_synthetic_lesions_with_the_models_inputs(
    image_only_checkpoint, multi_input_checkpoint, tmp_path
):
    app = load_space_app()
    image_only = app.example_rows(SkinClassifier.from_pretrained(image_only_checkpoint), tmp_path / "a")
    multi = app.example_rows(SkinClassifier.from_pretrained(multi_input_checkpoint), tmp_path / "b")
    assert len(image_only) == len(multi) == 4
    assert all(len(row) == 1 for row in image_only) and all(len(row) == 4 for row in multi)
    for path, age, sex, localization in multi:
        assert Path(path).is_file() and Path(path).is_relative_to(tmp_path)
        assert (age is None or 0 <= float(age) <= 120) and sex in ("male", "female", "unknown") and localization


def checkpoint_that_learned_from(checkpoint: Path, folder: Path, training_data: dict | None) -> Path:
    """A copy of `checkpoint` whose config records `training_data` (as training writes `describe_data`'s dict)."""
    import shutil

    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("training_data", None)
    if training_data is not None:
        config["training_data"] = training_data
    (folder / "config.json").write_text(json.dumps(config))
    return folder


SYNTHETIC = {"kind": "synthetic", "location": "/home/someone/hf-skin/data/synthetic_ham10000", "synthetic": True}
HAM10000 = {"kind": "ham10000", "location": "/data/HAM10000", "synthetic": False}


@pytest.mark.parametrize("training_data", [SYNTHETIC, HAM10000, None], ids=["synthetic", "ham10000", "not-recorded"])
def test_the_page_and_every_result_name_what_the_model_learned_from(image_only_checkpoint, tmp_path, training_data):
    """The page opened with "This model learned from HAM10000…" whatever it served, make demo's synthetic model too.
    Now its first paragraph and every result say what the served model's checkpoint records; a synthetic one is a
    demo that knows nothing about real lesions, and nothing on its page says it learned from HAM10000."""
    from hf_skin.data import training_data_sentence

    served = checkpoint_that_learned_from(image_only_checkpoint, tmp_path / "model", training_data)
    sentence = training_data_sentence(training_data)
    with serve_space(served) as space:
        [intro] = [block.value for block in space.demo.blocks.values() if isinstance(block, gradio.Markdown)][:1]
        summary = Client(space.url, verbose=False).predict(
            save(photo(), tmp_path / "lesion.jpg"), api_name="/predict"
        )[1]
        page = json.dumps(space.demo.config)
    assert intro.startswith("# Skin lesion classifier\n**Research demo — not a diagnosis.**") and sentence in intro
    assert sentence in summary
    if training_data is SYNTHETIC:
        assert "demo" in sentence and "knows nothing about real" in sentence
        assert summary.index(sentence) < summary.index("Most likely")  # before the answer, not after it
    if training_data is not HAM10000:
        assert "learned from HAM10000" not in page and "learned from HAM10000" not in summary


def test_space_card_and_requirements(monkeypatch):
    """The card has what the Hub reads; requirements.txt pins every package hf-skin and its `space` extra need, within
    setup.cfg's ranges, and gradio at the card's sdk_version."""
    card = metadata_load(SPACE / "README.md")
    assert card["sdk"] == "gradio" and (SPACE / card["app_file"]).is_file()
    assert card["license"] == "cc-by-nc-4.0" and card["models"] and len(card["short_description"]) <= 60
    assert "not a diagnosis" in (SPACE / "README.md").read_text()

    # The default is the best model the project documents, not the CNN, and the card says what it reached: the
    # numbers it quotes are RESULTS.md's for that recipe's run (test balanced accuracy and its interval).
    text = (SPACE / "README.md").read_text()
    assert card["models"][0] == "hf-skin/hf-skin-multi-input-lite0" and "cnn" not in card["models"][0]
    assert "By default the Space serves `hf-skin/hf-skin-multi-input-lite0`" in text
    assert (
        "`recipes/multi_input_lite0.json`" in text and "balanced accuracy of 0.725 (95% interval 0.664–0.778)" in text
    )
    results = (SPACE.parent / "benchmarks" / "RESULTS.md").read_text()
    assert "| 2 multi-input over it | 0.725 [0.664, 0.778] |" in results
    assert "| 1 EfficientNet-Lite0 | 0.643 [" in results and "| 2 | hf-skin CNN, 64², √ oversampling" in results

    pinned = {}
    for line in (SPACE / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            [specifier] = requirement.specifier
            assert specifier.operator == "==", f"{line}: pin the version the tests ran with"
            pinned[requirement.name.lower().replace("_", "-")] = specifier.version
    setup = configparser.ConfigParser()
    setup.read(SPACE.parent / "setup.cfg")
    needed = setup["options"]["install_requires"].split() + setup["options.extras_require"]["space"].split()
    for requirement in map(Requirement, filter(None, needed)):
        name = requirement.name.lower()
        assert name in pinned, f"spaces/requirements.txt lacks {name}"
        assert requirement.specifier.contains(pinned[name]), f"{name}=={pinned[name]} is outside {requirement}"
    assert pinned["gradio"] == str(card["sdk_version"])

    app = load_space_app()
    monkeypatch.delenv("HF_SKIN_MODEL", raising=False)
    assert app.default_model() == card["models"][0]
    monkeypatch.setenv("HF_SKIN_MODEL", "runs/demo")
    assert app.default_model() == "runs/demo"
    assert gradio.__version__.split(".")[0] == str(card["sdk_version"]).split(".")[0]


def api_call(url: str, data: list) -> str:
    """POST /gradio_api/call/predict with `data` as JSON, as any HTTP client can; the event id."""
    response = httpx.post(f"{url}gradio_api/call/predict", json={"data": data}, timeout=30)
    response.raise_for_status()
    return response.json()["event_id"]


def api_result(url: str, event_id: str) -> tuple[str, object]:
    """The outcome of a call: ("complete", outputs) or ("error", message), read from its event stream."""
    with httpx.stream("GET", f"{url}gradio_api/call/predict/{event_id}", timeout=120) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event in ("complete", "error"):
                data = json.loads(line.removeprefix("data: "))
                return event, data["error"] if event == "error" and isinstance(data, dict) else data
    raise AssertionError(f"the event stream of {event_id} ended without a result")


def upload(url: str, path: Path) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=60)


def uploaded(url: str, path: Path) -> dict:
    """`path` uploaded as the page uploads a photo: the file payload that names gradio's copy of it."""
    response = upload(url, path)
    response.raise_for_status()
    [server_path] = response.json()
    return {"path": server_path, "meta": {"_type": "gradio.FileData"}}


NOT_UPLOADED = "Only a photo uploaded to this page can be classified"


@pytest.mark.parametrize(
    "payload, message",
    [
        (lambda secret: {"path": secret}, NOT_UPLOADED),  # no "meta": gradio passes such a dict on unchecked
        (lambda secret: {"path": os.path.relpath(secret)}, NOT_UPLOADED),
        (lambda secret: {"path": "/etc/passwd"}, NOT_UPLOADED),
        (lambda secret: {"path": "/tmp/gradio/../../etc/passwd"}, NOT_UPLOADED),
        (lambda secret: {"url": "file://" + secret}, "Add a photo"),
        (lambda secret: {"path": secret, "meta": {"_type": "gradio.FileData"}}, None),  # gradio's refusal: no text
    ],
    ids=["path", "relative-path", "etc-passwd", "dot-dot", "file-url", "path-with-meta"],
)
def test_a_file_on_the_server_cannot_be_sent_as_the_photo(image_only_space, tmp_path, monkeypatch, payload, message):
    """A client names a file on the server instead of uploading one: refused, and the file is never opened. (A photo
    outside gradio's upload folder would otherwise be classified, and its heatmap, a copy of it, sent back.)"""
    app, calls = image_only_space.app, image_only_space.classifier.calls
    secret = tmp_path / "secret.png"
    photo().save(secret)
    opened = []
    load_image = app.load_image
    monkeypatch.setattr(app, "load_image", lambda path, *a, **k: opened.append(path) or load_image(path, *a, **k))
    before = len(calls)

    url = image_only_space.url
    event, error = api_result(url, api_call(url, [payload(str(secret))]))
    assert event == "error" and (error is None if message is None else message in error)
    assert opened == [] and len(calls) == before
    # An upload of the same photo is classified: the refusal is about where the file is, not what it is.
    assert api_result(url, api_call(url, [uploaded(url, secret)]))[0] == "complete"
    assert len(calls) == before + 1


def noise_png(path: Path, side: int = 300) -> Path:
    """A PNG of random pixels: incompressible, ~270 kB at 300 × 300."""
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def test_an_upload_over_the_size_limit_is_refused_with_a_clear_message(limited_space, tmp_path):
    url, calls = limited_space.url, limited_space.classifier.calls
    assert limited_space.demo.max_file_size == int(0.1 * 2**20)  # HF_SKIN_MAX_FILE_SIZE_MB, applied at launch
    big = noise_png(tmp_path / "big.png")
    assert big.stat().st_size > 0.1 * 2**20
    response = upload(url, big)
    assert response.status_code == 413
    assert "File size exceeded maximum allowed size of 104857 bytes" in response.text
    before = len(calls)
    # gradio_client reads the limit from the page's config and refuses before sending.
    with pytest.raises(ValueError, match="exceeds the maximum file size of 104857 bytes"):
        Client(url, verbose=False).predict(handle_file(str(big)), api_name="/predict")
    assert len(calls) == before
    # A photo under the limit is classified.
    result = Client(url, verbose=False).predict(save(photo(), tmp_path / "ok.jpg"), api_name="/predict")
    check_result(result, (300, 200))


def test_a_request_beyond_the_queue_is_told_the_space_is_busy(limited_space, tmp_path):
    """HF_SKIN_MAX_QUEUE=1: one request running, one waiting, and the next is turned away at once with a message that
    says what to do, not left hanging."""
    from gradio_client.utils import QueueError

    url, classifier = limited_space.url, limited_space.classifier
    request = [uploaded(url, Path(save(photo(), tmp_path / "lesion.jpg")["path"]))]
    classifier.gate.clear()  # the model holds every request until the gate opens
    try:
        before = len(classifier.calls)
        events = [api_call(url, request)]
        deadline = time.monotonic() + 60
        while len(classifier.calls) == before:
            assert time.monotonic() < deadline, "the first request never reached the model"
            time.sleep(0.1)
        events.append(api_call(url, request))  # waits in the queue's one place
        refused = httpx.post(f"{url}gradio_api/call/predict", json={"data": request}, timeout=30)
        assert refused.status_code == 503
        assert refused.json()["detail"] == (
            "The Space is busy (too many requests are waiting). Please try again in a minute."
        )
        assert refused.headers["retry-after"] == "60"
        with pytest.raises(QueueError, match="Please try again"):  # gradio_client says it in its own words
            Client(url, verbose=False).predict(save(photo(), tmp_path / "again.jpg"), api_name="/predict")
    finally:
        classifier.gate.set()
    assert [api_result(url, event)[0] for event in events] == ["complete", "complete"]


def files_under(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file() or path.is_symlink()}


@contextlib.contextmanager
def space_process(checkpoint, tmp_path: Path, env: dict[str, str]):
    """`python spaces/app.py` as a Space runs it, on 127.0.0.1 at a free port, with `env` (the Space's variables);
    its URL. Its output goes to tmp_path/space.log, which a failing test shows."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(
        os.environ,
        HF_SKIN_MODEL=str(checkpoint),
        GRADIO_SERVER_NAME="127.0.0.1",
        GRADIO_SERVER_PORT=str(port),
        GRADIO_ANALYTICS_ENABLED="False",
        **env,
    )
    url, log = f"http://127.0.0.1:{port}/", tmp_path / "space.log"
    with open(log, "wb") as output:
        process = subprocess.Popen([sys.executable, str(SPACE / "app.py")], env=env, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                httpx.get(url, timeout=5).raise_for_status()
                break
            except httpx.HTTPError:
                assert process.poll() is None, f"the Space exited ({process.returncode}):\n{log.read_text()}"
                assert time.monotonic() < deadline, f"the Space did not answer at {url}:\n{log.read_text()}"
                time.sleep(0.5)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_photos_and_heatmaps_go_when_the_page_says_in_every_copy_gradios_included(image_only_checkpoint, tmp_path):
    """The real folders, watched from outside the Space's process: Gradio's (GRADIO_TEMP_DIR, where uploads and the
    copies of every file the page shows go) and the temp dir. HF_SKIN_KEEP_FILES_MINUTES=0.1: 6 s, swept every
    second, so the page promises 7 s. What an earlier, killed run left is gone at start; a start leaves no folder of
    examples in the temp dir; a photo and its heatmap are gone 7 s after they were made (+ 3 s for this loaded
    machine), Gradio's folders of them too; and a stopped Space (SIGTERM: kill, docker stop) leaves nothing."""
    import signal

    gradio_dir, temp_dir = tmp_path / "gradio", tmp_path / "tmp"
    folder = gradio_dir / "hf_skin_space"  # the Space's own, inside Gradio's
    earlier = [folder / ("ab" * 32) / "patient.jpg", folder / "hf_skin_heatmaps" / "heatmap-0123.png"]
    for path in earlier:
        path.parent.mkdir(parents=True)
        photo().save(path)
    temp_dir.mkdir()
    env = {"GRADIO_TEMP_DIR": str(gradio_dir), "TMPDIR": str(temp_dir), "HF_SKIN_KEEP_FILES_MINUTES": "0.1"}
    with space_process(image_only_checkpoint, tmp_path, env) as (process, url):
        assert not any(path.exists() for path in earlier)
        assert not list(temp_dir.glob("hf_skin_examples_*"))
        examples = files_under(gradio_dir)  # the synthetic examples' copies, shown to everyone while the page runs
        assert examples and all(path.is_relative_to(folder) for path in examples)
        assert "deleted from this server within 7 seconds, and when the Space stops" in httpx.get(f"{url}config").text

        sent = time.monotonic()
        payload = uploaded(url, Path(save(photo(), tmp_path / "lesion.jpg")["path"]))
        event, outputs = api_result(url, api_call(url, [payload]))
        assert event == "complete"
        made = files_under(gradio_dir) - examples
        assert {Path(payload["path"]), Path(outputs[2]["path"])} <= made  # the upload and the heatmap
        # Gradio's folder of the upload (named by its content's hash) goes with it.
        while (left := files_under(gradio_dir) - examples) or Path(payload["path"]).parent.exists():
            assert time.monotonic() < sent + 7 + 3, f"still on the server after 7 s: {sorted(map(str, left))}"
            time.sleep(0.25)
        # The same photo sent again, now deleted: a message that says what happened.
        event, message = api_result(url, api_call(url, [payload]))
        assert event == "error" and "no longer on the server" in message

        api_result(url, api_call(url, [uploaded(url, tmp_path / "lesion.jpg")]))  # a photo, then the Space stops
        assert files_under(gradio_dir) - examples
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    assert files_under(gradio_dir) == set() and not list(temp_dir.glob("hf_skin_examples_*"))


def test_settings_come_from_the_spaces_variables(monkeypatch):
    app = load_space_app()
    for name in ("HF_SKIN_MAX_FILE_SIZE_MB", "HF_SKIN_MAX_QUEUE", "HF_SKIN_KEEP_FILES_MINUTES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("HF_SKIN_MAX_MEGAPIXELS", raising=False)
    defaults = app.Settings.from_env()
    assert (defaults.max_file_size, defaults.max_pixels, defaults.max_queue, defaults.keep_files) == (
        20 * 2**20,
        30_000_000,
        64,
        600,
    )
    monkeypatch.setenv("HF_SKIN_MAX_FILE_SIZE_MB", "5")
    monkeypatch.setenv("HF_SKIN_MAX_MEGAPIXELS", "12.5")
    monkeypatch.setenv("HF_SKIN_MAX_QUEUE", "8")
    monkeypatch.setenv("HF_SKIN_KEEP_FILES_MINUTES", "30")
    assert app.Settings.from_env() == app.Settings(
        max_file_size=5 * 2**20, max_pixels=12_500_000, max_queue=8, keep_files=1800
    )
    for bad in ("many", "0", "-3", "inf"):
        monkeypatch.setenv("HF_SKIN_MAX_QUEUE", bad)
        with pytest.raises(ValueError, match=f"HF_SKIN_MAX_QUEUE='{bad}' is not a positive number"):
            app.Settings.from_env()


@pytest.fixture(scope="module")
def calibrated_checkpoint(image_only_checkpoint, tmp_path_factory):
    """The image-only checkpoint with a calibration (fully oversampled training undone) and a referral threshold."""
    import shutil

    from hf_skin import calibration

    path = tmp_path_factory.mktemp("calibrated_space") / "model"
    shutil.copytree(image_only_checkpoint, path)
    classifier = SkinClassifier.from_pretrained(path)
    counts = [327, 514, 1099, 115, 1113, 6705, 142]
    fitted = calibration.fit_calibration(
        np.zeros((1, 7)), np.array([5]), train_counts=counts, method="prior", balance="oversample"
    )
    point = {"threshold": 0.02, "target_sensitivity": 0.9, "sensitivity": 0.91, "specificity": 0.4}
    calibration.fold(classifier.model, fitted, point | {"test": {"sensitivity": 0.88, "specificity": 0.42}})
    classifier.model.save_pretrained(path)
    return path


def test_a_calibrated_checkpoint_says_what_for_and_gives_the_validated_referral_advice(
    calibrated_checkpoint, tmp_path
):
    with serve_space(calibrated_checkpoint) as space:
        result = Client(space.url, verbose=False).predict(save(photo(), tmp_path / "lesion.jpg"), api_name="/predict")
        page = json.dumps(space.demo.config)
    probs = check_result(result, (300, 200))
    [expected] = SkinClassifier.from_pretrained(calibrated_checkpoint).predict(tmp_path / "lesion.jpg")
    assert probs == pytest.approx({display_name(dx): p for dx, p in expected.items()}, abs=1e-5)
    malignant = sum(probs[display_name(dx)] for dx in MALIGNANT_DX)
    advice = "**See a dermatologist:**" if malignant >= 0.02 else "Below this model's referral threshold"
    assert advice in result[1] and "The threshold, 2.0%, was chosen on validation images" in result[1]
    assert "on test images it flagged 88% of malignant lesions, and 58% of benign ones too" in result[1]
    # The page says, once, in one sentence, for which population the probabilities hold.
    assert "Probabilities are calibrated for the class mix of the training images (67% moles (nevi)" in page


def test_an_uncalibrated_checkpoint_says_so(image_only_space):
    assert "not calibrated" in json.dumps(image_only_space.demo.config)


def test_the_space_serves_an_exported_model_and_says_why_there_is_no_heatmap(calibrated_checkpoint, tmp_path):
    """HF_SKIN_MODEL may name an export (hf_skin.export): onnxruntime predicts, with the checkpoint's calibration
    and referral threshold; the heatmap needs the PyTorch model, and the page says so instead of showing none."""
    from hf_skin.export import export_onnx

    export = tmp_path / "export"
    export_onnx(calibrated_checkpoint, export)
    with serve_space(export) as space:
        assert space.classifier.is_onnx
        result = Client(space.url, verbose=False).predict(save(photo(), tmp_path / "lesion.jpg"), api_name="/predict")
        page = json.dumps(space.demo.config)
    label, summary, heatmap, shown = result
    probs = probabilities(label)
    [expected] = SkinClassifier.from_pretrained(calibrated_checkpoint).predict(tmp_path / "lesion.jpg")
    assert probs == pytest.approx({display_name(dx): p for dx, p in expected.items()}, abs=1e-4)
    assert heatmap is None and "No heatmap: this Space serves an exported (ONNX) model" in summary
    assert "The threshold, 2.0%, was chosen on validation images" in summary
    assert "Probabilities are calibrated for the class mix of the training images" in page
