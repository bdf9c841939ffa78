"""The on-device page (spaces/ondevice/) in a real browser: headless Chromium (Debian's package) driven by
Playwright, every request that is not for the page's own files aborted and recorded. The page's probabilities are
compared with Python onnxruntime's over the same int8 model, its messages with the Gradio Space's."""

import contextlib
import functools
import http.server
import io
import json
import shutil
import struct
import subprocess
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import load_space_app
from PIL import Image

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

ROOT = Path(__file__).resolve().parents[1]
ONDEVICE = ROOT / "spaces" / "ondevice"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ORT = ONDEVICE / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it when it runs as root)",
    ),
    pytest.mark.skipif(
        not ORT.is_file(),
        reason="onnxruntime-web is not installed: run make ondevice-deps (npm ci; needs node and npm: apt-get install "
        "-y nodejs npm, which .ci/run does when it runs as root)"
        if shutil.which("npm")
        else "node/npm are not installed, so onnxruntime-web cannot be (apt-get install -y nodejs npm; .ci/run "
        "installs them when it runs as root)",
    ),
]


IDENTITY_CALIBRATION = {
    "method": "temperature",
    "temperature": 1.0,
    "logit_bias": [0.0] * 7,
    "sampling_prior": None,
    "target_prior": None,
    "target_prior_source": "the training split's mix",
    "train_counts": None,
}
OPERATING_POINT = {"threshold": 0.3, "target_sensitivity": 0.9, "test": {"sensitivity": 0.875, "specificity": 0.71}}


@pytest.fixture(scope="module")
def int8_export(multi_input_checkpoint, synthetic_dir, tmp_path_factory):
    """The tiny multi-input checkpoint exported with int8, calibrated and chosen on the synthetic data."""
    from hf_skin.data import load_ham10000
    from hf_skin.export import export_onnx, run_inputs
    from hf_skin.inference import SkinClassifier

    classifier = SkinClassifier.from_pretrained(multi_input_checkpoint)
    # an identity calibration (T = 1, no bias: the logits stay as trained) and a referral threshold, so that the page
    # has the Space's calibration sentence and referral advice to show
    classifier.model.config.calibration = IDENTITY_CALIBRATION
    classifier.model.config.operating_point = OPERATING_POINT
    splits = load_ham10000(synthetic_dir)
    calibration, _ = run_inputs(classifier, splits["train"], 64)
    validation, labels = run_inputs(classifier, splits["validation"])
    out = tmp_path_factory.mktemp("ondevice_export") / "export"
    # fully int8 (the export's only int8), as the page matches Python onnxruntime to 1e-3 only then (first layers
    # kept fp32 round differently in WebAssembly: benchmarks/RESULTS.md, issue 12, "In the browser")
    export_onnx(classifier, out, "int8", calibration, validation, labels)
    assert not json.loads((out / "hf_skin_export.json").read_text())["models"]["int8"]["fp32_layers"]
    return out


@pytest.fixture(scope="module")
def page_dir(int8_export, tmp_path_factory):
    """The page built by `make ondevice` into a fresh folder, from the installed onnxruntime-web (`-o`: no npm, no
    network, whatever the lock file's date)."""
    out = tmp_path_factory.mktemp("ondevice_page")
    installed = "spaces/ondevice/node_modules/.package-lock.json"
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", installed, "ondevice", f"EXPORT={int8_export}", f"ONDEVICE_OUT={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert (out / "model" / "model_int8.onnx").is_file() and (out / "vendor" / "ort-wasm-simd-threaded.wasm").is_file()
    return out


@pytest.fixture(scope="module")
def server(page_dir):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(page_dir)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                # belt and braces with the routes below: no host name resolves but the local server's
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            ],
        )
        yield browser
        browser.close()


class Page:
    """A browser context on the page, whose requests are recorded and allowed only to the local server."""

    def __init__(self, browser, url, viewport=(1280, 900)):
        self.url, self.requests, self.refused = url, [], []
        self.context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.errors = []
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))

    def _route(self, route):
        request_url = route.request.url
        self.requests.append(request_url)
        if request_url.startswith(self.url) or request_url.startswith("data:") or request_url.startswith("blob:"):
            route.continue_()
        else:
            self.refused.append(request_url)
            route.abort()

    def open(self):
        self.page.goto(self.url)
        self.page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        return self

    def classify(self, photo, **metadata) -> dict:
        page = self.page
        page.set_input_files("#photo", str(photo))
        for field, value in metadata.items():
            if field == "age":
                page.fill("#age", value)
            else:
                page.select_option(f"#{field}", value)
        page.evaluate("window.hfSkinResult = null")
        page.click("#classify")
        page.wait_for_function("window.hfSkinResult", timeout=60_000)
        return page.evaluate("window.hfSkinResult")

    def close(self):
        self.context.close()


@pytest.fixture
def page(browser, server):
    page = Page(browser, server).open()
    yield page
    page.close()
    assert not page.errors, page.errors


def lesion(path, width=400, height=300, seed=0, **save):
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((cols - width / 2.5) / 80.0) ** 2 + ((rows - height / 2) / 60.0) ** 2))[..., None]
    pixels = np.array([215, 165, 150]) * (1 - 0.65 * blob) + rng.normal(0, 12, (height, width, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, **save)
    return path


def python_probabilities(export, photo, **metadata) -> dict:
    from hf_skin.inference import SkinClassifier

    classifier = SkinClassifier.from_pretrained(export, precision="int8")
    return classifier.predict(photo, **metadata)[0]


def test_the_page_classifies_a_photo_in_the_browser_as_python_onnxruntime_does(
    page, int8_export, synthetic_dir, tmp_path
):
    from hf_skin.inference import SkinClassifier, display_name, summarize

    # a synthetic lesion from the data, a big photo (strong downscale), an EXIF-rotated JPEG and a transparent PNG
    rotated = Image.open(lesion(tmp_path / "plain.jpg", 300, 200, seed=3))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rotated.save(tmp_path / "rotated.jpg", exif=exif, quality=92)
    rgba = Image.open(lesion(tmp_path / "opaque.png", 160, 120, seed=4)).convert("RGBA")
    alpha = np.full((120, 160), 255, np.uint8)
    alpha[:40] = 0
    alpha[40:60] = 128
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "transparent.png")
    photos = [
        (sorted(synthetic_dir.glob("HAM10000_images_part_*/*.jpg"))[0], {}),
        (lesion(tmp_path / "big.jpg", 1600, 1200, seed=1, quality=90), {"age": "45", "sex": "female"}),
        (tmp_path / "rotated.jpg", {"age": "0", "localization": "back"}),
        (tmp_path / "transparent.png", {"sex": "male", "localization": "lower extremity"}),
    ]
    for photo, metadata in photos:
        result = page.classify(photo, **metadata)
        assert "error" not in result, result
        given = {"age": None, "sex": "unknown", "localization": "unknown", **metadata}
        expected = python_probabilities(int8_export, photo, **given)
        assert result["probs"].keys() == expected.keys()
        difference = max(abs(result["probs"][k] - expected[k]) for k in expected)
        assert difference <= 1e-3, (photo.name, difference)
        page.page.fill("#age", "")
        for field in ("sex", "localization"):
            page.page.select_option(f"#{field}", "unknown")

    # what the page shows: the Space's summary (summarize's words, without the Markdown) and every class by name
    summary = page.page.inner_text("#summary")
    expected_summary = summarize(result["probs"], operating_point=OPERATING_POINT).replace("**", "")
    assert summary.split() == expected_summary.split()
    assert "referral threshold" in summary and "88% of malignant lesions" in summary
    pytest.importorskip("gradio", reason="the space extra is not installed")
    note = load_space_app().calibration_note(SkinClassifier.from_pretrained(int8_export))
    assert page.page.inner_text("#calibration") == note.strip("*")
    names = page.page.locator("#probabilities .name").all_inner_texts()
    assert names == [display_name(label) for label in sorted(result["probs"], key=lambda k: -result["probs"][k])]
    assert "Your photo never leaves this device." in page.page.inner_text("#private")
    checked = json.loads((int8_export / "hf_skin_export.json").read_text())["models"]["int8"]["validation"]
    said = f"full-precision model's on {100 * checked['top1_agreement']:.2f}% of {checked['n']} validation images"
    assert said in page.page.inner_text("#model")  # how far int8 is from fp32, on the page
    # nothing but the page's own files was requested
    assert page.refused == []
    assert page.requests and all(url.startswith(page.url) for url in page.requests if url.startswith("http"))


def space_message(app, path) -> str:
    import gradio as gr

    try:
        app.read_upload(str(path))
    except gr.Error as err:
        return err.message
    raise AssertionError(f"the Space accepted {path}")


def huge_png(path, width=20_000, height=10_000):
    """A valid PNG of 200 megapixels in a few hundred KB: what a decompression bomb looks like."""
    raw = zlib.compressobj(9)
    row = b"\x00" + b"\x00" * width
    data = b"".join(raw.compress(row) for _ in range(height)) + raw.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


def test_bad_files_get_the_same_messages_as_the_space(page, tmp_path):
    pytest.importorskip("gradio", reason="the space extra is not installed")
    app = load_space_app()
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("these are my notes, not a photo")
    good = io.BytesIO()
    Image.new("RGB", (64, 48), "brown").save(good, "JPEG")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(good.getvalue()[:200] + bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8)))
    huge = huge_png(tmp_path / "huge.png")
    for bad in (not_image, corrupt, huge):
        result = page.classify(bad)
        assert result == {"error": space_message(app, bad)}, bad.name
        assert page.page.inner_text("#error") == result["error"]
        assert page.page.locator("#probabilities li").count() == 0  # no result beside a bad photo
        if bad is not_image:  # nothing the browser can show: no broken image with its alt text (seen at 390x844)
            page.page.wait_for_function("document.getElementById('preview').hidden", timeout=10_000)
    assert "too large to open safely (over 179 megapixels)" in space_message(app, huge)

    # an age that is not one: the Space's parse_age words
    import gradio as gr

    result = page.classify(lesion(tmp_path / "ok.jpg"), age="forty")
    assert page.page.is_visible("#preview")  # a photo after a bad file is shown again
    with pytest.raises(gr.Error) as refused:
        app.parse_age("forty")
    assert result == {"error": refused.value.message}


def test_the_page_works_offline_once_loaded(browser, server, tmp_path):
    page = Page(browser, server).open()
    try:
        page.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        page.page.reload()  # now controlled by the service worker, which has cached every file
        page.page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        online = page.classify(lesion(tmp_path / "a.jpg"))
        page.context.set_offline(True)
        page.page.reload()
        page.page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        offline = page.classify(tmp_path / "a.jpg")
        assert "error" not in offline and offline["probs"] == pytest.approx(online["probs"], abs=1e-7)
        assert page.refused == []
    finally:
        page.context.set_offline(False)
        page.close()


def test_the_page_fits_a_phone_screen(browser, server, tmp_path):
    page = Page(browser, server, viewport=(390, 844)).open()
    try:
        # before a photo is chosen its preview takes no room (it showed as a broken image with its alt text)
        assert not page.page.is_visible("#preview")
        result = page.classify(lesion(tmp_path / "a.jpg"), age="30")
        assert page.page.is_visible("#preview")
        assert "error" not in result
        # no sideways scrolling, and the button and every probability row within the screen's width
        assert page.page.evaluate("document.documentElement.scrollWidth") <= 390
        for selector in ("#classify", "#probabilities li", "#summary", "#photo"):
            box = page.page.locator(selector).first.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, selector
        page.page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'phone.png'}")
    finally:
        page.close()


@contextlib.contextmanager
def page_serving(browser, server, spec: dict):
    """The page, loaded and ready, with its spec replaced by `spec` (the page's own fetch answered by a route; only
    the page's origin reachable)."""
    context = browser.new_context(service_workers="block")
    try:
        context.route(
            "**/*", lambda route: route.continue_() if route.request.url.startswith(server) else route.abort()
        )
        context.route("**/model/hf_skin_export.json", lambda route: route.fulfill(json=spec))
        page = context.new_page()
        page.goto(server)
        page.wait_for_selector("body[data-ready=true]", timeout=60_000)
        yield page
    finally:
        context.close()


def test_the_model_line_says_when_the_int8_model_keeps_its_first_layers_fp32(browser, server, int8_export):
    spec = json.loads((int8_export / "hf_skin_export.json").read_text())
    spec["models"]["int8"]["fp32_layers"] = 6
    with page_serving(browser, server, spec) as page:
        line = page.inner_text("#model")
        assert "int8 (its first 6 layers fp32, " in line and "MB), exported by hf-skin" in line


def test_the_page_reads_the_spec_it_is_built_with(page_dir, int8_export):
    spec = json.loads((page_dir / "model" / "hf_skin_export.json").read_text())
    assert spec == json.loads((int8_export / "hf_skin_export.json").read_text())
    assert spec["models"]["int8"]["file"] == "model_int8.onnx" and spec["metadata"]["fields"]


def test_the_pages_resize_gives_pythons_pixel_values(page):
    """skin.js's pixelValues against hf_skin.processing.pixel_values_from_spec, on the same RGB pixels, for every
    resize rule an export can name: the page's model inputs are Python's, not a canvas's rescaling."""
    from hf_skin.processing import pixel_values_from_spec

    rng = np.random.default_rng(0)
    specs = [
        {"resize": {"height": 32, "width": 32}, "resample": "bilinear"},
        {"resize": {"height": 132, "width": 176}, "resample": "bicubic"},
        {"resize": {"height": 64, "width": 48}, "resample": "nearest"},
        {"resize": {"height": 90, "width": 120}, "resample": "bicubic"},  # upscaling the 60x80 image
        {"resize": {"shortest_edge": 32, "crop_pct": 0.875}, "resample": "bicubic"},
    ]
    for height, width in [(450, 600), (60, 80), (97, 41)]:
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        for spec in specs:
            spec = {**spec, "rescale_factor": 1 / 255, "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3]}
            expected = pixel_values_from_spec([Image.fromarray(pixels)], spec)[0]
            got = page.page.evaluate(
                """async ([data, width, height, spec]) => {
                    const skin = await import("./skin.js");
                    const image = { width, height, data: Uint8ClampedArray.from(data) };
                    const out = skin.pixelValues(image, spec);
                    return { dims: out.dims, data: Array.from(out.data) };
                }""",
                [pixels.ravel().tolist(), width, height, spec],
            )
            assert got["dims"] == [1, *expected.shape], spec
            assert np.abs(np.asarray(got["data"], dtype=np.float32).reshape(expected.shape) - expected).max() < 1e-5


@pytest.mark.parametrize("kind", ["synthetic", "ham10000", "isic2018", "hub", "prepared", None])
def test_the_page_says_what_the_model_learned_from_as_python_does(browser, server, int8_export, kind):
    """The page's opening words come from the spec's `training_data`, in `training_data_sentence`'s words: a model
    trained on synthetic lesions says it is a demo (the page said "This model learned from HAM10000" whatever it
    served)."""
    from hf_skin.data import training_data_sentence

    data = {
        "synthetic": {"kind": "synthetic", "location": "/d/synthetic_ham10000", "synthetic": True},
        "ham10000": {"kind": "ham10000", "location": "/data/HAM10000", "synthetic": False},
        "isic2018": {"kind": "isic2018", "location": "/data/ISIC2018", "synthetic": False},
        "hub": {"kind": "hub", "location": "someone/ham10000", "synthetic": False},
        "prepared": {
            "kind": "parquet",
            "location": "/data/prepared",
            "synthetic": False,
            "prepared_from": {"kind": "ham10000", "location": "/data/HAM10000", "synthetic": False},
        },
        None: None,
    }[kind]
    spec = json.loads((int8_export / "hf_skin_export.json").read_text())
    spec["training_data"] = data
    with page_serving(browser, server, spec) as page:
        said = page.inner_text("#training-data")
        assert said == training_data_sentence(data)
        assert ("HAM10000, dermatoscope images" in said) == (kind in ("ham10000", "prepared"))
        assert ("demo" in said) == (kind == "synthetic")
