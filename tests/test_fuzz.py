"""Any bytes through the two readers of untrusted input (an image, the metadata CSV): a result or a named error
(`ValueError` naming what to fix), never another exception or a hang. Deterministic (`derandomize`), so CI is
stable; a failure prints the smallest input that shows it."""

import csv
import io
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hf_skin.data.sources.ham10000 import read_metadata
from hf_skin.labels import DX_LABELS, LOCALIZATION_LABELS, METADATA_COLUMNS, SEX_LABELS
from hf_skin.processing import load_image

FUZZ = settings(
    max_examples=200,
    derandomize=True,
    deadline=timedelta(seconds=5),  # a hang guard, loose enough for a loaded 2-core CI machine
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)


def encoded(fmt: str, **kwargs) -> bytes:
    array = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# Valid files of the formats a user may hand over: mutations of them reach far deeper into the decoders than
# random bytes, which PIL rejects at the first byte.
SEEDS = [encoded("JPEG"), encoded("JPEG", progressive=True), encoded("PNG"), encoded("GIF"), encoded("BMP")]
SEEDS += [encoded("TIFF"), encoded("WEBP")]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        operation = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "overwrite"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if operation == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif operation == "truncate":
            del data[at:]
        elif operation == "insert":
            data[at:at] = draw(st.binary(max_size=16))
        elif operation == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        else:
            chunk = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff", b"\xff\xd9"]))
            data[at : at + len(chunk)] = chunk
    return bytes(data)


image_bytes = st.one_of(st.binary(max_size=512), mutated(SEEDS))


def check_image(data: bytes, target_size) -> None:
    try:
        image = load_image(data, target_size=target_size)
    except ValueError as err:
        assert "cannot decode" in str(err) or "no image" in str(err), err
        return
    except Image.DecompressionBombError:
        return  # documented: a header claiming more pixels than PIL.Image.MAX_IMAGE_PIXELS
    assert image.mode == "RGB" and min(image.size) >= 1


def lazily_opened(data: bytes):
    """What a caller holding `PIL.Image.open(...)` passes: header parsed, pixels not yet read (None if PIL refuses)."""
    try:
        return Image.open(io.BytesIO(data))
    except Exception:
        return None


# Every form load_image accepts, as a dataset row, a caller or the Space hands it over.
image_values = st.one_of(
    image_bytes,
    image_bytes.map(lambda data: {"bytes": data, "path": None}),
    image_bytes.map(lazily_opened),
    st.sampled_from([None, {"bytes": None, "path": None}, {"bytes": b"", "path": None}, "/nowhere/ISIC_0.jpg"]),
)


@FUZZ
@given(value=image_values, target_size=st.sampled_from([None, 8]))
def test_load_image_any_bytes(value, target_size):
    check_image(value, target_size)


@FUZZ
@given(data=mutated(SEEDS))
def test_load_image_any_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "image.jpg"
    path.write_bytes(data)
    check_image(str(path), None)
    check_image({"bytes": None, "path": str(path)}, None)


HEADER = ",".join(METADATA_COLUMNS)
VALID_ROW = "HAM_0000118,ISIC_0027419,bkl,histo,80.0,male,scalp"


@st.composite
def csv_text(draw) -> bytes:
    """Mostly well-formed HAM10000 CSV with values drawn from everything a spreadsheet might hold."""
    cell = st.one_of(
        st.sampled_from(DX_LABELS + SEX_LABELS + LOCALIZATION_LABELS + ["", "nan", "inf", "-1", "1e400", "45"]),
        st.text(max_size=12),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    columns = draw(st.one_of(st.just(METADATA_COLUMNS), st.permutations(METADATA_COLUMNS + ["extra"])))
    rows = draw(st.lists(st.lists(cell, min_size=len(columns), max_size=len(columns) + 1), max_size=6))
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    text = buffer.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "latin-1", "utf-16"]))
    return text.encode(encoding, errors="replace")


metadata_bytes = st.one_of(
    st.binary(max_size=512),
    csv_text(),
    mutated([f"{HEADER}\n{VALID_ROW}\n{VALID_ROW.replace('0027419', '0027420')}\n".encode()]),
)


@FUZZ
@given(data=metadata_bytes)
def test_read_metadata_any_bytes(data):
    path = Path("/data/HAM10000/HAM10000_metadata.csv")
    try:
        rows = read_metadata(path, data)
    except ValueError as err:
        assert str(path) in str(err), err  # names the file (and, where it can, the line)
        return
    assert rows
    for row in rows:
        assert row["image_id"] and row["lesion_id"]
        assert 0 <= row["dx"] < len(DX_LABELS) and 0 <= row["sex"] < len(SEX_LABELS)
        assert row["age"] is None or (math.isfinite(row["age"]) and 0 <= row["age"] <= 120)


def test_the_fuzzer_reaches_valid_inputs():
    """The strategies are not all noise: the unmutated seeds decode, the seed CSV parses."""
    assert all(load_image(seed).size == (16, 12) for seed in SEEDS)
    rows = read_metadata(Path("HAM10000_metadata.csv"), f"{HEADER}\n{VALID_ROW}\n".encode())
    assert rows[0]["image_id"] == "ISIC_0027419" and rows[0]["age"] == 80.0


@pytest.mark.parametrize("data", [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"BM", b"II*\x00", b"RIFF"])
def test_load_image_format_magic_alone(data):
    check_image(data, None)
