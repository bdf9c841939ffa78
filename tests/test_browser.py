"""The Space in a real browser: headless Chromium (Debian's package) driven by Playwright. What the page sends is
checked where it lands, in the classifier (`recording_classifier`), not in gradio_client, which sends what it is
given."""

import shutil
import time

import httpx
import numpy as np
import pytest
from conftest import recording_classifier, serve_space
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it when it runs as root)",
)
# The Space's variables for the multi-input page: a small upload limit and a one-place queue, so that the tests can
# go past both.
LIMITS = {"HF_SKIN_MAX_FILE_SIZE_MB": "0.1", "HF_SKIN_MAX_QUEUE": "1"}
BUSY = "This application is currently busy. Please try again."  # Gradio's own text for a full queue


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def multi_input_space(multi_input_checkpoint):
    with serve_space(multi_input_checkpoint, recording_classifier(multi_input_checkpoint), env=LIMITS) as space:
        yield space


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    yield page
    page.close()


def lesion(path, width=400, height=300):
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:height, 0:width]
    blob = np.exp(-(((cols - width / 2) / 80.0) ** 2 + ((rows - height / 2) / 60.0) ** 2))[..., None]
    pixels = np.array([215, 165, 150]) * (1 - 0.65 * blob) + rng.normal(0, 6, (height, width, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def open_space(page, url):
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.get_by_text("Research demo — not a diagnosis.")).to_be_visible(timeout=30_000)


def add_photo(page, path):
    from playwright.sync_api import expect

    page.set_input_files("input[type=file]", str(path))
    # As a person does: press Classify once the photo shows (a click during the upload has no photo yet).
    expect(page.locator(f"img[src*='{path.name}']")).to_be_visible(timeout=30_000)


def classify(page, calls: list, done: str = "Probability of a malignant class") -> dict:
    """Presses Classify, waits for the model to be called and the page to show the result; the metadata it got."""
    from playwright.sync_api import expect

    before = len(calls)
    page.get_by_role("button", name="Classify").click()
    deadline = time.monotonic() + 60
    while len(calls) == before and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert len(calls) == before + 1, "pressing Classify did not reach the model once"
    # Every status overlay ("processing | 0.4s" over the outputs) is hidden again: the result has landed, and the next
    # click is a new request (the page drops a click while its last one is pending).
    expect(page.locator("[data-testid=status-tracker]:not(.hide)")).to_have_count(0, timeout=60_000)
    expect(page.get_by_text(done)).to_be_visible()
    return calls[-1]


def test_a_person_uploads_a_photo_and_sees_the_diagnoses_the_summary_and_the_heatmap(
    image_only_checkpoint, page, tmp_path
):
    from playwright.sync_api import expect

    with serve_space(image_only_checkpoint) as space:
        open_space(page, space.url)
        add_photo(page, lesion(tmp_path / "lesion.jpg"))
        page.get_by_role("button", name="Classify").click()

        expect(page.get_by_text("Probability of a malignant class")).to_be_visible(timeout=60_000)
        for name in ("Melanoma (mel)", "Melanocytic nevus (nv)", "Basal cell carcinoma (bcc)"):
            expect(page.get_by_text(name, exact=True).first).to_be_visible()
        expect(page.get_by_text("Heatmap — Grad-CAM for")).to_be_visible()
        # The heatmap: an image in the output column that the browser has loaded and drawn.
        heatmap = page.get_by_test_id("block-label").filter(has_text="Explanation heatmap").locator("xpath=..")
        picture = heatmap.locator("img").first
        expect(picture).to_be_visible(timeout=30_000)
        assert picture.evaluate("img => img.complete && img.naturalWidth") == 400
        # How long the photo is kept is on the page, beside the photo.
        expect(page.get_by_text("deleted from this server within 11 minutes")).to_be_visible()
        page.screenshot(path=str(tmp_path / "space.png"), full_page=True)
        print(f"screenshot: {tmp_path / 'space.png'}")


def test_an_age_left_empty_reaches_the_model_as_unknown_and_a_typed_one_as_typed(multi_input_space, page, tmp_path):
    from playwright.sync_api import expect

    calls = multi_input_space.classifier.calls
    open_space(page, multi_input_space.url)
    age = page.get_by_label("Age (years)")
    expect(age).to_have_value("")  # an empty box, not 0: a newborn is not "unknown"
    expect(age).to_have_attribute("placeholder", "unknown")
    page.screenshot(path=str(tmp_path / "multi_input.png"), full_page=True)
    print(f"screenshot: {tmp_path / 'multi_input.png'}")
    add_photo(page, lesion(tmp_path / "lesion.jpg"))

    assert classify(page, calls) == {"age": None, "sex": "unknown", "localization": "unknown"}
    age.fill("45")
    page.get_by_label("Sex").click()
    page.get_by_role("option", name="female").click()
    assert classify(page, calls) == {"age": 45, "sex": "female", "localization": "unknown"}
    age.fill("0")  # a newborn: 0 is an age, and it arrives as one
    assert classify(page, calls)["age"] == 0
    age.fill("")  # typed, then deleted: unknown again
    assert classify(page, calls)["age"] is None

    # An example fills in its age as text, and the model gets the number.
    [_, example_age, sex, localization] = multi_input_space.app.example_rows(multi_input_space.classifier, tmp_path)[0]
    page.locator("table tbody tr").first.click()
    expect(age).to_have_value(example_age)
    assert classify(page, calls) == {"age": float(example_age), "sex": sex, "localization": localization}


def test_an_oversized_photo_is_refused_with_a_clear_message(multi_input_space, page, tmp_path):
    from playwright.sync_api import expect

    calls = multi_input_space.classifier.calls
    before = len(calls)
    open_space(page, multi_input_space.url)
    expect(page.get_by_text("Photos up to 0.1 MB")).to_be_visible()
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(big)
    assert big.stat().st_size > 0.1 * 2**20
    page.set_input_files("input[type=file]", str(big))
    expect(page.get_by_text("exceed the maximum allowed size of 102.4 Kb")).to_be_visible(timeout=30_000)
    page.get_by_role("button", name="Classify").click()
    expect(page.get_by_text("Add a photo of the skin lesion first")).to_be_visible(timeout=30_000)
    assert len(calls) == before  # nothing reached the model


def test_a_person_beyond_the_queue_is_told_the_space_is_busy(multi_input_space, page, tmp_path):
    from playwright.sync_api import expect

    space, calls = multi_input_space, multi_input_space.classifier.calls
    open_space(page, space.url)
    add_photo(page, lesion(tmp_path / "lesion.jpg"))
    with open(tmp_path / "lesion.jpg", "rb") as f:
        [path] = httpx.post(f"{space.url}gradio_api/upload", files={"files": f}).json()
    request = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, None, "unknown", "unknown"]}
    space.classifier.gate.clear()  # the model holds every request until the gate opens
    try:
        before = len(calls)
        events = [httpx.post(f"{space.url}gradio_api/call/predict", json=request).json()["event_id"]]
        deadline = time.monotonic() + 60
        while len(calls) == before:  # the first request runs (held in the model)
            assert time.monotonic() < deadline, "the first request never reached the model"
            time.sleep(0.1)
        events.append(httpx.post(f"{space.url}gradio_api/call/predict", json=request).json()["event_id"])  # waits
        page.get_by_role("button", name="Classify").click()  # one more than running + HF_SKIN_MAX_QUEUE
        expect(page.get_by_text(BUSY)).to_be_visible(timeout=30_000)
    finally:
        space.classifier.gate.set()
    for event in events:  # both held requests finish once the gate opens
        with httpx.stream("GET", f"{space.url}gradio_api/call/predict/{event}", timeout=120) as stream:
            assert any(line == "event: complete" for line in stream.iter_lines())


def broken_images(page) -> int:
    """Images on show that the browser could not draw: the broken-image icon."""
    return page.evaluate(
        "() => [...document.images].filter(i => i.offsetParent !== null && i.complete && i.naturalWidth === 0).length"
    )


def test_an_unreadable_file_gets_its_message_where_the_result_would_be_and_it_stays(multi_input_space, page, tmp_path):
    """A text file named .jpg passes the page's own type check and reaches the Space. Its message was a toast that
    went after 10 s, leaving red "Error" pills over the outputs and a broken image in the photo box; now it is the
    result, and stays, and the file is off the photo box."""
    from playwright.sync_api import expect

    calls = multi_input_space.classifier.calls
    before = len(calls)
    open_space(page, multi_input_space.url)
    notes = tmp_path / "notes.jpg"
    notes.write_text("these are my notes, not a photo")
    page.set_input_files("input[type=file]", str(notes))
    page.wait_for_timeout(1_000)  # the upload lands (and shows as a broken image)
    page.get_by_role("button", name="Classify").click()
    message = page.get_by_text("This file could not be read as an image. Please upload a photo")
    expect(message).to_be_visible(timeout=30_000)
    expect(page.get_by_role("heading", name="Not classified")).to_be_visible()
    page.wait_for_timeout(10_500)  # longer than Gradio's toasts last
    expect(message).to_be_visible()
    assert page.locator("[data-testid=toast-body]").count() == 0
    assert page.get_by_text("Error", exact=True).count() == 0  # no red pills over the outputs
    assert broken_images(page) == 0
    expect(page.get_by_text("Click to Upload")).to_be_visible()  # the photo box is empty again
    assert len(calls) == before  # nothing reached the model

    # A photo after it: the message goes, the result comes.
    add_photo(page, lesion(tmp_path / "lesion.jpg"))
    expect(message).to_have_count(0)
    classify(page, calls)


def test_on_a_phone_the_result_comes_right_after_the_inputs_and_the_bars_read(multi_input_space, browser, tmp_path):
    """At 390×844: after Classify the summary is on the screen (the result column follows the photo and its inputs,
    the examples come after it, and the page scrolls to the result); each diagnosis reads as its name and percent on
    one line over a bar as wide as the column; no "(mel) (12%)"."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    try:
        open_space(page, multi_input_space.url)
        add_photo(page, lesion(tmp_path / "lesion.jpg"))
        classify(page, multi_input_space.classifier.calls)
        summary = page.get_by_text("Probability of a malignant class")
        page.wait_for_timeout(1_000)  # the scroll to the result
        box = summary.bounding_box()
        assert 0 <= box["y"] and box["y"] + box["height"] <= 844, f"the summary is off the screen: {box}"

        def top(locator) -> float:
            return locator.evaluate("e => e.getBoundingClientRect().top + window.scrollY")

        examples = page.get_by_text("Examples (synthetic lesions, not real patients)")
        assert top(page.get_by_role("button", name="Classify")) < top(summary) < top(examples)

        rows = page.locator(".hf-skin-probabilities [role=listitem]")
        assert rows.count() == 7
        for i in range(7):
            name, number = rows.nth(i).locator("span").all()
            assert abs(name.bounding_box()["y"] - number.bounding_box()["y"]) < 4  # one line
            assert rows.nth(i).locator("div").nth(1).bounding_box()["width"] > 300  # the bar, nearly the width
        text = page.inner_text("body")
        assert ") (" not in text, text[max(0, text.index(") (") - 40) :][:80]
    finally:
        page.close()
