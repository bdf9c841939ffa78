import numpy as np
import pytest
import torch
from PIL import Image

from hf_skin.data import DX_LABELS
from hf_skin.inference import SkinClassifier
from hf_skin.models import build_model
from hf_skin.processing import processor_for


def test_multi_input_predict_api(tmp_path):
    torch.manual_seed(0)
    model = build_model("multi-input", hidden_sizes=[4, 8])
    processor_for(model, train_ages=[40.0, 60.0]).save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)

    classifier = SkinClassifier.from_pretrained(tmp_path)
    assert classifier.metadata_fields == ["age", "sex", "localization"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    [probs] = classifier.predict(image, age="45", sex="female", localization="back")
    assert set(probs) == set(DX_LABELS) and sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
    assert list(probs.values()) == sorted(probs.values(), reverse=True)
    # The metadata reaches the model: other metadata, other probabilities; none at all still works.
    [other] = classifier.predict(image, age="80", sex="male", localization="face")
    assert other != probs
    [bare] = classifier.predict(image)
    assert sum(bare.values()) == pytest.approx(1.0, abs=1e-5)
    batch = classifier.predict_proba(
        [image, image], age=["45", None], sex=["female", None], localization=["back", None]
    )
    assert batch.shape == (2, 7)
    assert batch[0].tolist() == pytest.approx([probs[label] for label in DX_LABELS], abs=1e-6)


def test_image_only_predict_matches_pipeline(tmp_path):
    from transformers import pipeline

    model = build_model("cnn", hidden_sizes=[4, 8])
    model.save_pretrained(tmp_path)
    processor_for(model).save_pretrained(tmp_path)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8))
    [probs] = SkinClassifier.from_pretrained(tmp_path).predict(image)
    assert SkinClassifier.from_pretrained(tmp_path).metadata_fields == []
    piped = {
        row["label"]: row["score"] for row in pipeline("image-classification", model=str(tmp_path), top_k=7)(image)
    }
    for label in DX_LABELS:
        assert probs[label] == pytest.approx(piped[label], abs=1e-5)


def test_summary_names_the_malignant_probability_and_says_when_it_is_uncertain():
    from hf_skin.inference import display_name, malignant_probability, summarize

    assert display_name("mel") == "Melanoma (mel)" and display_name("LABEL_3") == "LABEL_3"
    confident = {"nv": 0.7, "mel": 0.2, "bcc": 0.05, "akiec": 0.03, "bkl": 0.01, "df": 0.005, "vasc": 0.005}
    assert malignant_probability(confident) == pytest.approx(0.28)
    text = summarize(confident)
    assert "Melanocytic nevus (nv), 70%" in text and "malignant class" in text and "**28%**" in text
    assert "Uncertain" not in text
    torn = {"mel": 0.45, "nv": 0.40, "bkl": 0.15, "bcc": 0.0, "akiec": 0.0, "df": 0.0, "vasc": 0.0}
    assert summarize(torn).startswith("**Uncertain — this needs a dermatologist's eyes.**")
    assert "Uncertain" not in summarize(torn, uncertain_below=0.4)
