"""The Space in a real browser: headless Chromium (Debian's package) driven by Playwright."""

import shutil

import numpy as np
import pytest
from conftest import serve_space
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (apt-get install -y chromium; .ci/run installs it when it runs as root)",
)
def test_a_person_uploads_a_photo_and_sees_the_diagnoses_the_summary_and_the_heatmap(image_only_checkpoint, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0:300, 0:400]
    blob = np.exp(-(((cols - 200) / 80.0) ** 2 + ((rows - 150) / 60.0) ** 2))[..., None]
    pixels = np.array([215, 165, 150]) * (1 - 0.65 * blob) + rng.normal(0, 6, (300, 400, 3))
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(tmp_path / "lesion.jpg")

    with serve_space(image_only_checkpoint) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(url)
            expect(page.get_by_text("Research demo — not a diagnosis.")).to_be_visible(timeout=30_000)
            page.set_input_files("input[type=file]", str(tmp_path / "lesion.jpg"))
            # As a person does: press Classify once the photo shows (a click during the upload has no photo yet).
            expect(page.locator("img[src*='lesion.jpg']")).to_be_visible(timeout=30_000)
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
            page.screenshot(path=str(tmp_path / "space.png"), full_page=True)
            print(f"screenshot: {tmp_path / 'space.png'}")
        finally:
            browser.close()
