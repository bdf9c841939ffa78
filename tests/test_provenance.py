"""What data a model learned from, said truly everywhere (issue 28, defect 1): the synthetic demo model said it
learned from HAM10000 on the Space, the on-device page, its model card and its report."""

import json

import pytest
from conftest import small_args

from hf_skin.data import describe_data, is_synthetic, training_data_sentence
from hf_skin.inference import SkinClassifier, summarize


def test_a_source_is_described_by_what_it_really_is(synthetic_dir, real_ham_dir, tmp_path):
    synthetic = describe_data(synthetic_dir)
    assert synthetic == {"kind": "synthetic", "location": str(synthetic_dir.resolve()), "synthetic": True}
    assert describe_data(real_ham_dir)["kind"] == "ham10000" and not is_synthetic(describe_data(real_ham_dir))
    assert describe_data("someone/ham10000") == {"kind": "hub", "location": "someone/ham10000", "synthetic": False}
    assert "demo" in training_data_sentence(synthetic) and "HAM10000" not in training_data_sentence(synthetic)
    assert "HAM10000" in training_data_sentence(describe_data(real_ham_dir))
    assert "not recorded" in training_data_sentence(None)


def test_a_prepared_copy_of_synthetic_lesions_is_still_synthetic(synthetic_dir, tmp_path):
    from hf_skin.preparation import DatasetPreparationArguments, prepare_dataset

    out = tmp_path / "prepared"
    result = prepare_dataset(DatasetPreparationArguments(source=str(synthetic_dir), output_dir=str(out)))
    described = describe_data(out)
    assert described["kind"] == "saved" and described["synthetic"]
    assert described["prepared_from"]["kind"] == "synthetic"
    assert "synthetic lesions drawn by hf-skin" in result["card_path"].read_text()


@pytest.fixture(scope="module")
def synthetic_run(synthetic_dir, tmp_path_factory):
    from hf_skin.training import parse_args, run

    out = tmp_path_factory.mktemp("provenance") / "run"
    run(*parse_args(small_args(synthetic_dir, out, "--num_train_epochs", "1", "--train_metrics_samples", "0")))
    return out


def test_a_synthetic_runs_checkpoint_card_and_answers_say_it_is_a_demo(synthetic_run, synthetic_dir):
    from hf_skin.model_card import model_card

    config = json.loads((synthetic_run / "config.json").read_text())
    assert config["training_data"]["kind"] == "synthetic"
    # published with the checkpoint: the folder's name, not the user's absolute path
    assert config["training_data"]["location"] == synthetic_dir.name and "/" not in config["training_data"]["location"]
    classifier = SkinClassifier.from_pretrained(synthetic_run)
    assert is_synthetic(classifier.training_data)

    card = model_card(synthetic_run)
    metadata = card.data.to_dict()
    assert not metadata.get("datasets") and "ham10000" not in metadata["tags"]
    assert "A demo, not a model of skin lesions." in card.text and "synthetic lesions drawn by hf-skin" in card.text
    assert "HAM10000 (Tschandl et al. 2018)" not in card.text  # the Data section described HAM10000
    assert metadata["model-index"][0]["results"][0]["dataset"]["type"] == "synthetic"

    probs = {"df": 0.86, "nv": 0.1, "mel": 0.04, "akiec": 0.0, "bcc": 0.0, "bkl": 0.0, "vasc": 0.0}
    point = {"threshold": 0.3, "target_sensitivity": 0.9, "test": {"sensitivity": 1.0, "specificity": 0.5}}
    said = summarize(probs, operating_point=point, training_data=classifier.training_data)
    assert said.startswith("**This model is a demo") and "on test synthetic (not real) images it flagged 100%" in said
    real = summarize(probs, operating_point=point, training_data={"kind": "ham10000", "synthetic": False})
    assert "demo" not in real and "on test images it flagged 100%" in real


def test_a_synthetic_runs_export_and_report_say_so(synthetic_run, synthetic_dir, tmp_path):
    from hf_skin.evaluation import evaluate_checkpoint
    from hf_skin.export import export_run

    spec = export_run(synthetic_run, tmp_path / "export")
    assert spec["training_data"]["kind"] == "synthetic"
    assert SkinClassifier.from_pretrained(tmp_path / "export").training_data["synthetic"]

    evaluate_checkpoint(synthetic_run, synthetic_dir, "test", output_dir=tmp_path / "eval", bootstrap_resamples=0)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "**What it learned from.** This model is a demo" in report
    assert "These images are synthetic" in report and "HAM10000 consists of dermatoscopic images" not in report
