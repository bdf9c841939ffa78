"""The Gradio Space (spaces/app.py), launched on 127.0.0.1 and called through gradio_client, as a user's browser or
script calls it."""

import configparser
import io
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio
import numpy as np
import pytest
from conftest import load_space_app, serve_space
from gradio_client import Client, handle_file
from huggingface_hub import metadata_load
from packaging.requirements import Requirement
from PIL import Image

from hf_skin.data import DX_LABELS, MALIGNANT_DX
from hf_skin.inference import SkinClassifier, display_name

SPACE = Path(__file__).resolve().parents[1] / "spaces"


@pytest.fixture(scope="module")
def image_only_client(image_only_checkpoint):
    with serve_space(image_only_checkpoint) as url:
        yield Client(url, verbose=False)


@pytest.fixture(scope="module")
def multi_input_client(multi_input_checkpoint):
    with serve_space(multi_input_checkpoint) as url:
        yield Client(url, verbose=False)


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
    label, summary, heatmap = result
    probs = probabilities(label)
    assert set(probs) == {display_name(dx) for dx in DX_LABELS}
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    malignant = sum(probs[display_name(dx)] for dx in MALIGNANT_DX)
    assert "Probability of a malignant class" in summary and f"**{malignant:.0%}**" in summary
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
    ],
    ids=["no-image", "text-file", "broken-jpeg", "decompression-bomb"],
)
def test_bad_input_gets_a_clear_message_and_the_space_keeps_serving(image_only_client, tmp_path, make_file, message):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message):
        image_only_client.predict(make_file(tmp_path), api_name="/predict")
    check_result(image_only_client.predict(save(photo(), tmp_path / "ok.jpg"), api_name="/predict"), (300, 200))


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


def test_concurrent_requests_wait_in_the_queue_and_all_succeed(image_only_client, tmp_path):
    upload = save(photo(), tmp_path / "lesion.jpg")
    with ThreadPoolExecutor(8) as pool:
        jobs = [pool.submit(image_only_client.predict, upload, api_name="/predict") for _ in range(8)]
        results = [job.result(timeout=120) for job in jobs]
    assert all(probabilities(r[0]) == pytest.approx(probabilities(results[0][0]), abs=1e-6) for r in results)


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
        assert (age is None or 0 <= age <= 120) and sex in ("male", "female", "unknown") and localization


def test_space_card_and_requirements(monkeypatch):
    """The card has what the Hub reads; requirements.txt pins every package hf-skin and its `space` extra need, within
    setup.cfg's ranges, and gradio at the card's sdk_version."""
    card = metadata_load(SPACE / "README.md")
    assert card["sdk"] == "gradio" and (SPACE / card["app_file"]).is_file()
    assert card["license"] == "cc-by-nc-4.0" and card["models"] and len(card["short_description"]) <= 60
    assert "not a diagnosis" in (SPACE / "README.md").read_text()

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
