"""The run folder (hf_skin.runs): one run per folder, its state, its split, no token on disk; evaluation on the
run's own split only."""

import csv
import json
import pickle
import shutil

import pytest
from conftest import load_script, small_args

from hf_skin.evaluation import evaluate_checkpoint
from hf_skin.hub import read_run
from hf_skin.runs import FAILED, FINISHED, PUBLISHED_FILES, RunFolder, RunFolderError
from hf_skin.training import SkinTrainer, parse_args, run

TOKEN = "hf_" + "RunFolderSecretToken0123456789"
LIMITS = ["--num_train_epochs", "1", "--max_train_samples", "48", "--max_eval_samples", "24"]
LIMITS += ["--train_metrics_samples", "0", "--per_device_train_batch_size", "16"]


def train(dataset, out, *extra) -> dict:
    return run(*parse_args(small_args(dataset, out, *LIMITS, *extra)))


@pytest.fixture(scope="module")
def seed7_run(synthetic_dir, tmp_path_factory):
    """A finished tiny run split with --split_seed 7 and trained with a token given but no push."""
    out = tmp_path_factory.mktemp("seed7") / "run"
    train(synthetic_dir, out, "--split_seed", "7", "--hub_token", TOKEN, "--save_strategy", "epoch")
    return out


def test_a_finished_run_records_its_state_split_and_arguments(seed7_run):
    folder = RunFolder(seed7_run)
    assert folder.status == FINISHED and folder.state["world_size"] == 1
    assert folder.split_arguments() == {
        "validation_size": 0.15,
        "test_size": 0.15,
        "split_seed": 7,
        "on_missing": "error",
    }
    lesions = folder.split["lesions"]
    assert lesions["train"] and lesions["validation"] and lesions["test"]
    assert not set(lesions["train"]) & (set(lesions["validation"]) | set(lesions["test"]))
    assert folder.args["split_seed"] == 7 and "hub_token" not in folder.args
    assert read_run(seed7_run).path == seed7_run


def test_the_token_is_never_written_without_push(seed7_run):
    # Before the fix, trainer_push_settings returned before clearing --hub_token: training_args.bin held it.
    pickles = list(seed7_run.rglob("training_args.bin"))
    assert len(pickles) >= 2  # the run's and its checkpoint's
    for path in seed7_run.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_training_arguments_pickle_without_a_token(synthetic_dir, tmp_path):
    *_, training_args = parse_args(small_args(synthetic_dir, tmp_path / "x", "--hub_token", TOKEN))
    assert TOKEN.encode() not in pickle.dumps(training_args)
    assert training_args.hub_token == TOKEN  # in memory it stays usable for a push


def test_the_command_line_refuses_tokens(synthetic_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="--hub_token is not accepted on the command line.*HF_TOKEN"):
        load_script("finetune").main(small_args(synthetic_dir, out, "--hub_token", TOKEN))
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"model": "cnn", "hub_token": TOKEN}))
    with pytest.raises(SystemExit, match="holds a token"):
        load_script("finetune").main([str(args)])
    with pytest.raises(SystemExit, match="--token is not accepted"):
        load_script("push_to_hub").main([str(out), "user/x", f"--token={TOKEN}"])
    assert not out.exists()


def test_evaluation_uses_the_runs_own_split(seed7_run, synthetic_dir, tmp_path):
    # Before the fix, evaluate.py split with seed 42: a "test" split full of the seed-7 run's training lesions.
    metrics = evaluate_checkpoint(seed7_run, synthetic_dir, "test", output_dir=tmp_path / "eval")
    assert metrics["split_arguments"]["split_seed"] == 7
    with (synthetic_dir / "HAM10000_metadata.csv").open() as f:
        lesion_of = {row["image_id"]: row["lesion_id"] for row in csv.DictReader(f)}
    with (tmp_path / "eval" / "predictions.csv").open() as f:
        evaluated = {lesion_of[row["image_id"]] for row in csv.DictReader(f)}
    folder = RunFolder(seed7_run)
    # the run scored a subset of its test split (--max_eval_samples): the whole split holds it, and no training lesion
    assert len(evaluated) > 5 and evaluated >= set(folder.split["lesions"]["test"])
    assert not evaluated & folder.training_lesions()


def test_evaluation_refuses_another_split_of_the_run(seed7_run, synthetic_dir, tmp_path):
    with pytest.raises(RunFolderError, match="--split_seed 7.*--split_seed 42 would hold lesions it trained on"):
        evaluate_checkpoint(seed7_run, synthetic_dir, "test", seed=42, output_dir=tmp_path / "eval")
    with pytest.raises(RunFolderError, match="lesions .* trained on.*evaluate its test"):
        evaluate_checkpoint(seed7_run, synthetic_dir, "all", output_dir=tmp_path / "all")
    with pytest.raises(SystemExit, match="error: .*would hold lesions it trained on"):
        argv = ["--model", str(seed7_run), "--dataset", str(synthetic_dir), "--split_seed", "1"]
        load_script("evaluate").main([*argv, "--output_dir", str(tmp_path / "cli")])


def test_a_second_run_into_a_run_folder_is_refused(seed7_run, synthetic_dir):
    before = {p.name: p.read_bytes() for p in seed7_run.iterdir() if p.is_file()}
    with pytest.raises(RunFolderError, match="already holds a finished run.*--overwrite_output_dir"):
        train(synthetic_dir, seed7_run)
    assert {p.name: p.read_bytes() for p in seed7_run.iterdir() if p.is_file()} == before


def test_overwrite_replaces_a_run_and_refuses_other_folders(synthetic_dir, tmp_path):
    out = tmp_path / "run"
    train(synthetic_dir, out, "--split_seed", "3", "--eval_strategy", "no", "--save_strategy", "no")
    (out / "notes.txt").write_text("mine")
    train(synthetic_dir, out, "--overwrite_output_dir", "--eval_strategy", "no", "--save_strategy", "no")
    folder = RunFolder(out)
    assert folder.status == FINISHED and folder.split_arguments()["split_seed"] == 42
    assert not (out / "notes.txt").exists()  # the folder holds one run, the second
    other = tmp_path / "other"
    other.mkdir()
    (other / "thesis.tex").write_text("do not delete")
    with pytest.raises(RunFolderError, match="not an hf-skin run folder"):
        train(synthetic_dir, other, "--overwrite_output_dir")
    assert (other / "thesis.tex").read_text() == "do not delete"


def test_a_failed_run_is_visibly_unfinished_and_not_published(synthetic_dir, tmp_path, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SkinTrainer, "train", disk_full)
    out = tmp_path / "run"
    with pytest.raises(OSError, match="No space"):
        train(synthetic_dir, out)
    folder = RunFolder(out)
    assert folder.status == FAILED and "No space left on device" in folder.state["error"]
    with pytest.raises(RunFolderError, match="failed"):
        read_run(out)
    (out / "run_state.json").write_text(json.dumps({"status": "running", "started": "2026-12-02T10:00:00+00:00"}))
    with pytest.raises(RunFolderError, match="has not finished"):
        read_run(out)


def test_a_push_publishes_only_the_listed_files(seed7_run):
    (seed7_run / "notes.json").write_text("{}")
    (seed7_run / "helper.py").write_text("")
    names = RunFolder(seed7_run).published_files()
    assert "notes.json" not in names and "helper.py" not in names and "split.json" not in names
    assert {"config.json", "model.safetensors", "run_state.json", "test_metrics.json"} <= set(names)
    assert "configuration_cnn.py" in names and "modeling_cnn.py" in names
    assert PUBLISHED_FILES  # the list itself is the contract


def test_sample_limits_must_be_positive(synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match="--max_train_samples must be at least 1"):
        parse_args(small_args(synthetic_dir, tmp_path / "run", "--max_train_samples", "0"))


def test_a_run_made_before_split_json_is_checked_from_its_arguments(seed7_run, synthetic_dir, tmp_path):
    old = tmp_path / "old_run"
    shutil.copytree(seed7_run, old)
    (old / "split.json").unlink()
    (old / "run_state.json").unlink()
    assert RunFolder(old).status == FINISHED  # hf-skin before run states: finished when it has test metrics
    assert RunFolder(old).training_lesions() >= RunFolder(seed7_run).training_lesions()
    with pytest.raises(RunFolderError, match="lesions .* trained on"):
        evaluate_checkpoint(old, synthetic_dir, "all", output_dir=tmp_path / "all")
    metrics = evaluate_checkpoint(old, synthetic_dir, "test", output_dir=tmp_path / "test")
    assert metrics["split_arguments"]["split_seed"] == 7


def test_push_without_a_token_is_one_error_line(seed7_run, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # no `hf auth login` token there
    with pytest.raises(SystemExit, match="^error: no Hugging Face token found: set HF_TOKEN"):
        load_script("push_to_hub").main([str(seed7_run), "user/x"])
    # A dry run needs no token (nor the Hub): it says what it cannot know.
    plan = load_script("push_to_hub").main([str(seed7_run), "user/x", "--dry_run"])
    assert plan.repo_exists is None and plan.deletions is None and "unknown offline" in plan.describe()


def test_a_relative_dataset_is_recorded_as_the_folder_it_was(synthetic_dir, tmp_path, monkeypatch):
    """A run trained on `data/synthetic_ham10000` (relative) and read from another working directory: its record
    names the folder, never a Hub dataset of that name (the card linked it as one and wrote it into `datasets:`)."""
    import shutil

    from hf_skin.model_card import model_card

    work = tmp_path / "work"
    shutil.copytree(synthetic_dir, work / "data" / "synthetic_ham10000")
    monkeypatch.chdir(work)
    out = tmp_path / "run"
    argv = small_args("data/synthetic_ham10000", out, "--num_train_epochs", "1", "--max_train_samples", "40")
    run(*parse_args([*argv, "--train_metrics_samples", "0"]))
    monkeypatch.chdir(tmp_path)  # elsewhere
    recorded = json.loads((out / "run_args.json").read_text())["dataset"]
    assert recorded == str(work / "data" / "synthetic_ham10000")
    card = model_card(out)
    assert "huggingface.co/datasets/data/synthetic_ham10000" not in card.text
    assert not card.data.to_dict().get("datasets")
