import csv
import json
import sys

import numpy as np
import pytest
from conftest import SMALL_CNN, load_script, small_args
from scipy.special import softmax
from transformers import AutoModelForImageClassification, pipeline

from hf_skin import calibration as cal
from hf_skin.data import DX_LABELS
from hf_skin.evaluation import CALIBRATION_FILE
from hf_skin.inference import SkinClassifier, percent, summarize
from hf_skin.training import BalancedSampler

# ---------------------------------------------------------------------------------------------------------------
# Known answers: a generative model whose true posteriors are computable


def gaussian_world(n: int, prior, seed: int = 0, dim: int = 2, separation: float = 1.5):
    """Labels drawn from `prior`, features from unit Gaussians around class means; returns the features, labels
    and the log-likelihoods log p(x | y) (the logits of a model trained on a uniform class mix)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=separation, size=(len(prior), dim))
    labels = rng.choice(len(prior), size=n, p=prior)
    x = means[labels] + rng.normal(size=(n, dim))
    loglik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(axis=2)
    return x, labels, loglik


def test_prior_correction_of_a_fully_oversampled_model_recovers_the_true_posterior():
    """Full oversampling (power 1) fits p(y|x) under a uniform class mix: softmax(log p(x|y)). Prior correction from
    the training counts must give exactly the Bayes posterior under the data's prior."""
    prior = np.array([0.02, 0.05, 0.11, 0.01, 0.11, 0.67, 0.03])
    _, labels, uniform_logits = gaussian_world(40_000, prior)
    counts = np.bincount(labels, minlength=7)
    assert np.allclose(cal.sampling_prior(counts, "oversample", 1.0), 1 / 7)

    calibration = cal.fit_calibration(
        uniform_logits, labels, train_counts=counts, method="prior", balance="oversample", balance_power=1.0
    )
    corrected = softmax(calibration.apply(uniform_logits), axis=1)
    truth = softmax(uniform_logits + np.log(counts / counts.sum()), axis=1)  # Bayes with the empirical prior
    np.testing.assert_allclose(corrected, truth, atol=1e-10)
    # Averaged over the images, the corrected probabilities give back the class prior; the raw ones do not.
    np.testing.assert_allclose(corrected.mean(axis=0), counts / counts.sum(), atol=0.01)
    assert np.abs(softmax(uniform_logits, axis=1).mean(axis=0) - prior).max() > 0.2
    # ... and the log-likelihood of the labels improves, as it must for the true posterior
    assert calibration.scores["nll_after"] < calibration.scores["nll_before"] - 0.1


def test_square_root_balancing_shifts_by_half_the_log_counts():
    counts = np.array([100, 400, 1600, 25, 900, 6400, 36])
    sampling = cal.sampling_prior(counts, "class_weights", 0.5)
    np.testing.assert_allclose(sampling, np.sqrt(counts) / np.sqrt(counts).sum())
    shift = cal.prior_shift(counts / counts.sum(), sampling)
    np.testing.assert_allclose(shift - shift[0], 0.5 * np.log(counts / counts[0]), atol=1e-12)
    assert np.allclose(cal.sampling_prior(counts, "none"), counts / counts.sum())


def test_the_sampler_draws_classes_with_the_sampling_prior():
    """What sampling_prior assumes of oversampling is what BalancedSampler does."""
    labels = np.repeat(np.arange(4), [500, 100, 40, 10])
    sampler = BalancedSampler(labels, seed=0, power=0.5)
    drawn = np.concatenate([labels[list(sampler)] for epoch in range(20) if sampler.set_epoch(epoch) is None])
    observed = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(observed, cal.sampling_prior([500, 100, 40, 10], "oversample", 0.5), atol=0.01)


def test_temperature_recovers_the_over_confidence_factor():
    prior = np.full(7, 1 / 7)
    _, labels, logits = gaussian_world(20_000, prior, seed=1)
    temperature = cal.fit_temperature(3.0 * logits, labels)
    assert temperature == pytest.approx(3.0, rel=0.05)
    calibration = cal.fit_calibration(3.0 * logits, labels, train_counts=None, method="temperature")
    assert calibration.scores["ece_after"] < calibration.scores["ece_before"] / 3
    assert calibration.logit_bias == [0.0] * 7 and calibration.train_counts is None
    with pytest.raises(cal.CalibrationError, match="needs the training's class counts"):
        cal.fit_calibration(logits, labels, train_counts=None, method="prior")


def test_deployment_prior_gives_the_posterior_of_that_population():
    """Calibrated for a stated screening mix, the probabilities are Bayes' under that mix."""
    counts = np.array([300, 500, 1000, 100, 1100, 6700, 140])
    _, labels, logits = gaussian_world(5_000, counts / counts.sum(), seed=2)
    screening = cal.parse_prior("akiec=1,bcc=2,bkl=10,df=2,mel=1,nv=83,vasc=1", DX_LABELS)
    assert screening.sum() == pytest.approx(1.0) and screening[DX_LABELS.index("nv")] == pytest.approx(0.83)
    calibration = cal.fit_calibration(
        logits, labels, train_counts=counts, method="prior", balance="none", target_prior=screening
    )
    np.testing.assert_allclose(
        softmax(calibration.apply(logits), axis=1),
        softmax(logits + np.log(screening / (counts / counts.sum())), axis=1),
        atol=1e-10,
    )
    assert calibration.target_prior == pytest.approx(screening.tolist())


@pytest.mark.parametrize(
    "text, message",
    [
        ("nv=0.9,mel=0.1", "missing akiec"),
        ("nv=0.9,mel=x", "not label=share"),
        ("nv=-1", "not label=share"),
        ("cat=1", "not one of the model's labels"),
        ("nv=1,nv=2", "twice"),
        (",".join(f"{dx}=0" for dx in DX_LABELS), "sum to 0"),
    ],
)
def test_bad_priors_are_named(text, message):
    with pytest.raises(cal.CalibrationError, match=message):
        cal.parse_prior(text, DX_LABELS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "platt"}, "--calibration 'platt' is not one of none, prior"),
        ({"target_sensitivity": 0.0}, r"--target_sensitivity 0.0 must be in \(0, 1\]"),
        ({"target_sensitivity": 1.5}, r"--target_sensitivity 1.5 must be in \(0, 1\]"),
        ({"method": "temperature", "target_prior": "data"}, "needs a prior shift"),
    ],
)
def test_calibration_arguments_are_checked_in_one_place(kwargs, message):
    from hf_skin.evaluation import RecalibrationArguments

    with pytest.raises(cal.CalibrationError, match=message):
        cal.check_calibration_arguments(**kwargs)
    names = {"method": "calibration"}
    with pytest.raises(cal.CalibrationError, match=message):  # the script's arguments say it in the same words
        RecalibrationArguments(model="m", output_dir="o", **{names.get(k, k): v for k, v in kwargs.items()})
    if "method" in kwargs and "target_prior" not in kwargs:  # ... and so does the library
        with pytest.raises(cal.CalibrationError, match=message):
            cal.fit_calibration(np.zeros((1, 7)), [0], train_counts=None, method=kwargs["method"])
    if "target_sensitivity" in kwargs:
        with pytest.raises(cal.CalibrationError, match=message):
            cal.choose_operating_point([0, 5], np.eye(7)[[0, 5]], DX_LABELS, kwargs["target_sensitivity"])


def test_operating_point_is_the_highest_threshold_reaching_the_target():
    labels = np.array([4] * 10 + [5] * 10)  # 10 melanomas, 10 nevi
    mel = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.05] + [0.3] * 2 + [0.01] * 8)
    probs = np.zeros((20, 7))
    probs[:, 4], probs[:, 5] = mel, 1 - mel
    point = cal.choose_operating_point(labels, probs, DX_LABELS, target_sensitivity=0.9)
    assert point["threshold"] == pytest.approx(0.15, rel=1e-4)  # 9 of 10 melanomas at or above it; 0.2 catches 8
    assert point["threshold"] < 0.15  # a hair below: the 9th still counts after float32 rounding
    assert point["sensitivity"] == pytest.approx(0.9) and point["specificity"] == pytest.approx(0.8)
    assert cal.choose_operating_point(labels, probs, DX_LABELS, 1.0)["threshold"] == pytest.approx(0.05, rel=1e-4)
    assert cal.choose_operating_point(np.full(20, 5), probs, DX_LABELS) is None  # no malignant image: no threshold


# ---------------------------------------------------------------------------------------------------------------
# In the checkpoint: every family, every runtime


@pytest.fixture
def family_models(tiny_resnet_checkpoint, tiny_vit_checkpoint, tiny_timm_checkpoint):
    from hf_skin.models import build_model

    return {
        "cnn": lambda: build_model("cnn", **json.loads(SMALL_CNN)),
        "multi-input": lambda: build_model("multi-input", hidden_sizes=[4, 8]),
        "resnet": lambda: build_model("resnet101", model_name_or_path=str(tiny_resnet_checkpoint)),
        "vit": lambda: build_model("vit", model_name_or_path=str(tiny_vit_checkpoint)),
        "timm": lambda: build_model("efficientnet-lite0", model_name_or_path=str(tiny_timm_checkpoint)),
    }


@pytest.mark.parametrize("family", ["cnn", "multi-input", "resnet", "vit", "timm"])
def test_folding_calibrates_every_family_and_survives_save_and_load(family, family_models, tmp_path):
    import torch

    torch.manual_seed(0)
    model = family_models[family]().eval()
    pixel_values = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        raw = model(pixel_values=pixel_values).logits.double().numpy()
    calibration = cal.fit_calibration(
        raw, np.array([0, 4, 5, 5]), train_counts=[30, 50, 110, 10, 110, 670, 15], balance="oversample"
    )
    cal.fold(model, calibration, {"threshold": 0.2})
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        folded = loaded(pixel_values=pixel_values).logits.double().numpy()
    np.testing.assert_allclose(folded, calibration.apply(raw), atol=1e-4)
    np.testing.assert_allclose(calibration.undo(folded), raw, atol=1e-4)
    assert cal.Calibration.from_config(loaded.config) == calibration
    assert loaded.config.operating_point == {"threshold": 0.2}
    with pytest.raises(cal.CalibrationError, match="calibrated already"):
        cal.fold(loaded, calibration)
    cal.unfold(loaded)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(pixel_values=pixel_values).logits.double().numpy(), raw, atol=1e-4)
    assert loaded.config.calibration is None and loaded.config.operating_point is None


def test_folding_keeps_the_head_on_its_device():
    """On a GPU the head's weights are not on the CPU: the shift must be made where they are (meta stands in)."""
    from hf_skin.models import build_model

    model = build_model("cnn", **json.loads(SMALL_CNN)).to("meta")
    calibration = cal.fit_calibration(np.zeros((2, 7)), np.array([0, 5]), train_counts=[1] * 7, method="prior")
    cal.fold(model, calibration)
    assert cal.classifier_head(model).bias.device.type == "meta"


def test_fine_tuning_a_calibrated_checkpoint_starts_without_its_calibration(tiny_timm_checkpoint, tmp_path):
    """The old calibration is only where the new run starts: never unfolded from the new head, never served; nor
    are its weights int8-ready once fine-tuning moves them."""
    from hf_skin.models import build_model

    model = build_model("efficientnet-lite0", model_name_or_path=str(tiny_timm_checkpoint))
    calibration = cal.fit_calibration(np.zeros((2, 7)), np.array([0, 5]), train_counts=[1] * 7, method="prior")
    cal.fold(model, calibration, {"threshold": 0.3})
    model.config.int8_ready = {"steps": 300}
    model.save_pretrained(tmp_path)
    again = build_model("efficientnet-lite0", model_name_or_path=str(tmp_path))
    assert again.config.calibration is None and again.config.operating_point is None
    assert again.config.int8_ready is None


# ---------------------------------------------------------------------------------------------------------------
# Through training, the predict API, the pipeline, evaluation and recalibration


@pytest.fixture(scope="module")
def oversampled_run(synthetic_dir, tmp_path_factory):
    """A tiny CNN trained with full oversampling on synthetic lesions (calibrated by default)."""
    finetune = load_script("finetune")
    out = tmp_path_factory.mktemp("calibrated") / "run"
    argv = [*small_args(synthetic_dir, out), "--num_train_epochs", "3", "--per_device_train_batch_size", "16"]
    argv += ["--balance", "oversample", "--learning_rate", "3e-3", "--train_metrics_samples", "0"]
    old = sys.argv
    sys.argv = ["finetune.py", *argv]
    try:
        finetune.main()
    finally:
        sys.argv = old
    return out


def test_training_fits_the_calibration_on_validation_and_serves_it_everywhere(oversampled_run, synthetic_dir):
    config = json.loads((oversampled_run / "config.json").read_text())
    stored = cal.Calibration(**config["calibration"])
    assert stored.method == cal.DEFAULT_CALIBRATION and stored.balance == "oversample"
    assert stored.fitted_on["split"] == "validation"
    np.testing.assert_allclose(stored.sampling_prior, 1 / 7)  # full oversampling of 7 present classes
    split = json.loads((oversampled_run / "split.json").read_text())
    assert stored.fitted_on["n"] > 0 and stored.fitted_on["n"] <= sum(1 for _ in split["lesions"]["validation"]) * 3
    point = config["operating_point"]
    assert point["target_sensitivity"] == 0.9 and point["sensitivity"] >= 0.9
    assert set(point["test"]) >= {"sensitivity", "specificity"}  # scored on test after training

    # The run's metrics give NLL / Brier / ECE of test before and after.
    results = json.loads((oversampled_run / "all_results.json").read_text())
    for key in ("nll", "brier", "ece"):
        assert f"test_{key}_before" in results and f"test_{key}_after" in results
    assert results["test_nll_after"] == pytest.approx(results["test_nll"], abs=1e-9)
    assert {"test_referral_sensitivity", "test_referral_specificity"} <= set(results)

    # The predict API and transformers' pipeline give the same calibrated probabilities, with no code of their own.
    image = str(next((synthetic_dir / "HAM10000_images_part_1").glob("*.jpg")))
    classifier = SkinClassifier.from_pretrained(oversampled_run)
    [probs] = classifier.predict(image)
    piped = {
        p["label"]: p["score"] for p in pipeline("image-classification", model=str(oversampled_run), top_k=7)(image)
    }
    assert piped == pytest.approx(probs, abs=1e-5)
    # ... and undoing the calibration gives the raw model: its probabilities differ
    logits = classifier.predict_logits(image).double().numpy()
    raw = softmax(classifier.calibration.undo(logits), axis=1)[0]
    assert np.abs(raw - [probs[dx] for dx in classifier.labels]).max() > 1e-3


def test_prior_correction_recovers_the_class_mix_of_the_data(oversampled_run, synthetic_dir):
    """Trained with full oversampling, the raw model spreads its probability over the classes as if they were
    equally common; the calibrated one gives back the data's class mix (on its test split, averaged)."""
    from hf_skin.evaluation import load_eval_split, predict_dataset, view_probabilities

    classifier = SkinClassifier.from_pretrained(oversampled_run)
    test = load_eval_split(synthetic_dir, "test")
    labels = np.asarray(test["dx"])
    logits = predict_dataset(classifier, test)
    calibrated = view_probabilities(logits).mean(axis=0)
    raw = view_probabilities(classifier.calibration.undo(logits)).mean(axis=0)
    truth = np.bincount(labels, minlength=7) / len(labels)
    assert np.abs(calibrated - truth).sum() < 0.6 * np.abs(raw - truth).sum(), (calibrated, raw, truth)


def test_evaluation_reports_calibration_before_and_after(oversampled_run, synthetic_dir, tmp_path):
    from hf_skin.evaluation import evaluate_checkpoint

    metrics = evaluate_checkpoint(oversampled_run, synthetic_dir, "test", output_dir=tmp_path, bootstrap_resamples=0)
    scores = metrics["calibration"]["scores"]
    assert scores["nll_after"] == pytest.approx(metrics["nll"]) and scores["ece_after"] == pytest.approx(
        metrics["ece"]
    )
    assert scores["nll_before"] != pytest.approx(scores["nll_after"])
    run_test = json.loads((oversampled_run / "test_metrics.json").read_text())
    # One scorer: the run's test metrics and the evaluation's have one shape, down to the calibration and referral
    # summaries (the evaluation adds what it evaluated, and with bootstrap_resamples 0 neither has intervals).
    evaluated = {"split", "split_arguments", "model", "dataset", "tta", "metadata_fields", "isic_files"}
    evaluated |= {"training_data", "evaluated_data"}
    assert set(run_test) == set(metrics) - evaluated
    assert set(run_test["calibration"]) == set(scores and metrics["calibration"])
    assert set(run_test["operating_point"]) == set(metrics["operating_point"])
    assert metrics["confusion_matrix"] == run_test["confusion_matrix"]  # the serving path is the run's own model
    # One pixel path: the run's stored test metrics are the evaluation's, to 1e-6.
    for key in ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "ece", "nll", "brier"):
        assert metrics[key] == pytest.approx(run_test[key], abs=1e-6), key
    for key, value in run_test["calibration"]["scores"].items():
        assert scores[key] == pytest.approx(value, abs=1e-6), key
    point = metrics["operating_point"]
    assert point["threshold"] == pytest.approx(
        json.loads((oversampled_run / "config.json").read_text())["operating_point"]["threshold"]
    )
    assert point["sensitivity"] == pytest.approx(run_test["operating_point"]["sensitivity"])
    report = (tmp_path / "report.md").read_text()
    assert "## Calibration" in report and "raw model" in report and "Referral threshold" in report
    assert f"{point['threshold']:.2%}" in report
    assert (tmp_path / "reliability_diagram.png").stat().st_size > 20_000


def test_recalibration_on_a_clinic_set_fits_its_prior_without_retraining(oversampled_run, synthetic_dir, tmp_path):
    """A clinic recalibrates the checkpoint on its own labelled images (here: a synthetic folder the model never
    saw, made with another seed) for its own class mix; the original checkpoint is untouched."""
    from hf_skin.synthetic import make_synthetic_ham10000

    clinic = make_synthetic_ham10000(tmp_path / "clinic", num_lesions=60, seed=7, with_masks=False)
    metadata = clinic / "HAM10000_metadata.csv"  # other patients: lesion ids of their own
    metadata.write_text(metadata.read_text().replace("SYN_LES_", "CLINIC_"))
    before = (oversampled_run / "model.safetensors").read_bytes()
    calibrate = load_script("calibrate")
    out = tmp_path / "recalibrated"
    record = calibrate.main(
        ["--model", str(oversampled_run), "--dataset", str(clinic), "--split", "all", "--target_prior", "data"]
        + ["--output_dir", str(out)]
    )
    assert (oversampled_run / "model.safetensors").read_bytes() == before
    stored = SkinClassifier.from_pretrained(out).calibration
    assert stored.fitted_on["dataset"] == "clinic" and stored.fitted_on["split"] == "all"
    assert stored.train_counts == SkinClassifier.from_pretrained(oversampled_run).calibration.train_counts
    assert stored.target_prior_source.startswith("the class mix of clinic")
    with (clinic / "HAM10000_metadata.csv").open() as f:
        labels = [DX_LABELS.index(row["dx"]) for row in csv.DictReader(f)]
    expected = (np.bincount(labels, minlength=7) + cal.PSEUDO_COUNT) / (len(labels) + 7 * cal.PSEUDO_COUNT)
    np.testing.assert_allclose(stored.target_prior, expected)
    assert json.loads((out / CALIBRATION_FILE).read_text())["n"] == len(labels) == record["n"]
    # The run's record came along: evaluating the copy still uses, and guards, the run's own split.
    assert (out / "split.json").read_bytes() == (oversampled_run / "split.json").read_bytes()


def test_recalibrating_an_uncalibrated_run_counts_the_classes_it_trained_on(synthetic_dir, tmp_path):
    """Without a stored calibration, the prior shift needs the training's class counts: they come from the run
    folder (its own split of its own data, only the lesions it trained on) and its balancing from run_args.json."""
    from hf_skin.training import parse_args, run

    trained = tmp_path / "uncalibrated"
    argv = small_args(synthetic_dir, trained, "--calibration", "none", "--balance", "oversample")
    argv += ["--num_train_epochs", "1", "--max_train_samples", "40", "--train_metrics_samples", "0"]
    run(*parse_args(argv))
    assert SkinClassifier.from_pretrained(trained).calibration is None
    out = tmp_path / "recalibrated"
    load_script("calibrate").main(["--model", str(trained), "--output_dir", str(out)])
    stored = SkinClassifier.from_pretrained(out).calibration
    lesions = set(json.loads((trained / "split.json").read_text())["lesions"]["train"])
    with (synthetic_dir / "HAM10000_metadata.csv").open() as f:
        labels = [DX_LABELS.index(row["dx"]) for row in csv.DictReader(f) if row["lesion_id"] in lesions]
    assert stored.train_counts == np.bincount(labels, minlength=7).tolist()
    assert stored.method == cal.DEFAULT_CALIBRATION and stored.balance == "oversample"


def test_recalibration_refuses_what_would_leak_or_lose(oversampled_run, synthetic_dir, tmp_path):
    from hf_skin.cli import CommandLineError

    calibrate = load_script("calibrate")
    base = ["--model", str(oversampled_run), "--dataset", str(synthetic_dir)]
    with pytest.raises(SystemExit):  # argparse: test is not a choice
        calibrate.main([*base, "--split", "test", "--output_dir", str(tmp_path / "a")])
    with pytest.raises(CommandLineError, match="is the checkpoint itself|not an empty folder"):
        calibrate.main([*base, "--output_dir", str(oversampled_run)])
    with pytest.raises(CommandLineError, match="trained on"):  # all = the data it trained on
        calibrate.main([*base, "--split", "all", "--output_dir", str(tmp_path / "b")])
    with pytest.raises(CommandLineError, match="missing"):
        calibrate.main([*base, "--target_prior", "nv=1", "--output_dir", str(tmp_path / "c")])


# ---------------------------------------------------------------------------------------------------------------
# What a person reads


def test_percentages_never_say_certain():
    assert [percent(p) for p in (0.0, 0.004, 0.01, 0.5, 0.99, 0.995, 1.0)] == [
        "<1%",
        "<1%",
        "1%",
        "50%",
        "99%",
        ">99%",
        ">99%",
    ]
    text = summarize({"nv": 0.9999, "mel": 0.00005, "bcc": 0.00005})
    assert ">99%" in text and "<1%" in text and "100%" not in text and " 0%" not in text


def test_referral_advice_follows_the_stored_threshold():
    point = {"threshold": 0.08, "target_sensitivity": 0.9, "sensitivity": 0.91, "specificity": 0.55}
    point["test"] = {"sensitivity": 0.87, "specificity": 0.6}
    above = summarize({"nv": 0.9, "mel": 0.1}, operating_point=point)
    below = summarize({"nv": 0.95, "mel": 0.05}, operating_point=point)
    assert "**See a dermatologist:**" in above and "See a dermatologist" not in below
    assert "8.0%" in above and "87%" in above and "40% of benign" in above
    assert "Below this model's referral threshold" in below
    assert "referral" not in summarize({"nv": 0.95, "mel": 0.05})  # no threshold stored: no advice made up


def test_calibration_sentence_names_the_mix():
    calibration = cal.fit_calibration(
        np.zeros((2, 7)), np.array([5, 4]), train_counts=[327, 514, 1099, 115, 1113, 6705, 142], method="prior"
    )
    sentence = calibration.describe(DX_LABELS)
    assert "67% moles (nevi)" in sentence and "11% melanomas" in sentence and "lower" in sentence


def test_the_model_card_states_the_calibration_and_the_threshold(oversampled_run, image_only_checkpoint):
    from hf_skin.model_card import _calibration_text, model_card

    text = model_card(oversampled_run).text
    config = json.loads((oversampled_run / "config.json").read_text())
    test = json.loads((oversampled_run / "test_metrics.json").read_text())
    assert "**Calibration.** `prior+temperature`, fitted on the validation split" in text
    assert f"expected calibration error {test['calibration']['scores']['ece_before']:.3f} → " in text
    assert f"at least {config['operating_point']['threshold']:.2%}" in text
    assert f"on test, sensitivity {test['operating_point']['sensitivity']:.3f}" in text
    # a run trained before training wrote the scorer's shape: its card says the same
    old = {**test, "calibration": test["calibration"]["scores"], "raw": test["calibration"]["before"]}
    assert _calibration_text(config, old) == _calibration_text(config, test)
    assert _calibration_text({}, {}).startswith("**Calibration.** None")


def test_recalibrating_on_the_same_validation_split_gives_the_training_calibration(oversampled_run, tmp_path):
    """Undo, refit, fold: on the images training fitted it on, recalibration must give the same temperature, shift
    and threshold (a calibration applied twice, or fitted on calibrated logits, would not)."""
    calibrate = load_script("calibrate")
    out = tmp_path / "again"
    calibrate.main(["--model", str(oversampled_run), "--output_dir", str(out)])
    trained = SkinClassifier.from_pretrained(oversampled_run)
    again = SkinClassifier.from_pretrained(out)
    # One pixel path: training fitted its calibration on the validation images as serving decodes them (only the
    # train split is shrunk), so recalibration sees the same logits and refits the same numbers.
    assert again.calibration.temperature == pytest.approx(trained.calibration.temperature, rel=1e-6)
    np.testing.assert_allclose(again.calibration.logit_bias, trained.calibration.logit_bias, atol=1e-9)
    assert again.operating_point["threshold"] == pytest.approx(trained.operating_point["threshold"], rel=1e-6)


def test_a_temperature_only_recalibration_evaluates_and_refuses_a_prior_it_would_ignore(
    oversampled_run, synthetic_dir, tmp_path
):
    from hf_skin.cli import CommandLineError
    from hf_skin.evaluation import evaluate_checkpoint

    calibrate = load_script("calibrate")
    with pytest.raises(CommandLineError, match="needs a prior shift"):
        calibrate.main(
            ["--model", str(oversampled_run), "--calibration", "temperature", "--target_prior", "data"]
            + ["--output_dir", str(tmp_path / "refused")]
        )
    out = tmp_path / "temperature"
    calibrate.main(["--model", str(oversampled_run), "--calibration", "temperature", "--output_dir", str(out)])
    stored = SkinClassifier.from_pretrained(out).calibration
    assert stored.method == "temperature" and stored.target_prior is None and set(stored.logit_bias) == {0.0}
    metrics = evaluate_checkpoint(out, synthetic_dir, "test", output_dir=tmp_path / "eval", bootstrap_resamples=0)
    assert metrics["calibration"]["target_prior"] is None
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "a temperature of" in report and "rebalancing's shift" not in report
