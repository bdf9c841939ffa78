import importlib.util
import re
import sys
from pathlib import Path

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from huggingface_hub import DatasetCard

from hf_skin.cli import CommandLineError
from hf_skin.data import DX_LABELS, DX_NAMES, class_counts, ham10000_features, load_ham10000
from hf_skin.dataset_card import dataset_card

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "prepare_dataset.py"


def run_script(monkeypatch, *args: str) -> None:
    spec = importlib.util.spec_from_file_location("prepare_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["prepare_dataset.py", *args])
    module.main()


def card_class_counts(card: DatasetCard, splits: list[str]) -> dict[str, dict[str, int]]:
    """{split: {dx: count}} read back from the card's markdown class table."""
    header = next(line for line in card.text.splitlines() if line.startswith("| dx |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    counts = {split: {} for split in splits}
    for dx in DX_LABELS:
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {dx} |"))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[1] == DX_NAMES[dx]
        for split in splits:
            counts[split][dx] = int(cells[columns.index(split)].replace(",", ""))
    return counts


@pytest.fixture
def expected(synthetic_dir, tmp_path) -> DatasetDict:
    return load_ham10000(synthetic_dir, cache_dir=tmp_path / "expected_cache")


@pytest.mark.parametrize("format", ["disk", "parquet"])
def test_prepare_writes_dataset_card_and_plots(format, synthetic_dir, expected, tmp_path, monkeypatch, capsys):
    out = tmp_path / "prepared"
    run_script(
        monkeypatch, "--source", str(synthetic_dir), "--output_dir", str(out), "--format", format,
        "--cache_dir", str(tmp_path / "cache"),
    )  # fmt: skip

    if format == "disk":
        reloaded = datasets.load_from_disk(out)
    else:
        reloaded = datasets.load_dataset("parquet", data_files={s: str(out / f"{s}.parquet") for s in expected})
    assert list(reloaded) == ["train", "validation", "test"]
    for split in expected:
        assert reloaded[split].features == ham10000_features(with_mask=True)
        assert reloaded[split]["image_id"] == expected[split]["image_id"]
        assert reloaded[split][0]["image"].size == expected[split][0]["image"].size  # images travel, not paths
    # the prepared folder is itself a source of the loader, with its splits kept
    again = load_ham10000(out, resplit=False)
    assert {s: again[s].num_rows for s in again} == {s: expected[s].num_rows for s in expected}

    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "cc-by-nc-4.0"
    assert card.data.task_categories == ["image-classification"]
    assert {"medical", "dermatology", "skin-lesion", "ham10000"} <= set(card.data.tags)
    assert card_class_counts(card, list(expected)) == {s: class_counts(expected[s]) for s in expected}
    assert "No lesion appears in more than one split" in card.text
    assert "10.1038/sdata.2018.161" in card.text and "@article{tschandl2018ham10000" in card.text
    embedded = re.findall(r"!\[[^\]]*\]\((plots/[^)]+\.png)\)", card.text)
    assert len(embedded) == 5
    for relative in embedded:
        assert (out / relative).stat().st_size > 10_000

    printed = capsys.readouterr().out
    assert str(out / "README.md") in printed and str(out / "plots" / "class_counts.png") in printed


def test_card_warns_when_splits_share_lesions():
    features = Features({"lesion_id": Value("string"), "dx": ClassLabel(names=DX_LABELS)})
    train = Dataset.from_dict({"lesion_id": ["L1", "L1", "L2"], "dx": [5, 5, 4]}, features=features)
    test = Dataset.from_dict({"lesion_id": ["L2", "L3"], "dx": [4, 0]}, features=features)
    card = dataset_card(
        DatasetDict({"train": train, "test": test}), source_description="a test.", split_description="by hand."
    )
    assert "Warning: 1 lesion has images in more than one split" in card.text
    assert card.data.size_categories == ["n<1K"]
    assert card_class_counts(card, ["train", "test"])["train"]["nv"] == 2
    assert "| lesions | | | 2 | 2 | 3 |" in card.text  # L2 counted once in the total


def image_ids(splits: DatasetDict) -> dict[str, list[str]]:
    return {name: list(split["image_id"]) for name, split in splits.items()}


def test_prepare_replaces_an_earlier_preparation(synthetic_dir, tmp_path, monkeypatch, caplog):
    out, cache = tmp_path / "prepared", str(tmp_path / "cache")
    run_script(monkeypatch, "--source", str(synthetic_dir), "--output_dir", str(out), "--cache_dir", cache)
    assert (out / "dataset_dict.json").is_file()
    # the same folder again, as parquet and with another split: the earlier save_to_disk files must not win
    run_script(
        monkeypatch, "--source", str(synthetic_dir), "--output_dir", str(out), "--format", "parquet",
        "--split_seed", "7", "--cache_dir", cache,
    )  # fmt: skip
    expected = load_ham10000(synthetic_dir, seed=7, cache_dir=cache)
    assert image_ids(expected) != image_ids(load_ham10000(synthetic_dir, cache_dir=cache))  # the seeds differ
    assert image_ids(load_ham10000(out, resplit=False)) == image_ids(expected)
    written = ["README.md", "hf_skin_source.json", "plots", "test.parquet", "train.parquet", "validation.parquet"]
    assert sorted(p.name for p in out.iterdir()) == written
    assert "Replacing the earlier preparation" in caplog.text and "dataset_dict.json" in caplog.text
    assert "split seed 7" in (out / "README.md").read_text()


def test_prepare_refuses_a_folder_it_did_not_write(synthetic_dir, tmp_path, monkeypatch):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("months of work")
    (out / "train.parquet").write_bytes(b"not ours either, but looks it")
    with pytest.raises(CommandLineError, match="holds files that prepare_dataset did not write \\(thesis.tex\\)"):
        run_script(monkeypatch, "--source", str(synthetic_dir), "--output_dir", str(out))
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex", "train.parquet"]
    with pytest.raises(CommandLineError, match="is the --source"):
        run_script(monkeypatch, "--source", str(synthetic_dir), "--output_dir", str(synthetic_dir))


def test_prepare_takes_the_split_arguments_of_training(synthetic_dir, tmp_path, monkeypatch, capsys):
    from dataclasses import fields

    from hf_skin.data import SplitArguments
    from hf_skin.preparation import DatasetPreparationArguments

    assert issubclass(DatasetPreparationArguments, SplitArguments)
    names = [f.name for f in fields(DatasetPreparationArguments)]
    assert names.count("test_size") == 1 and "split_seed" in names and "seed" not in names
    args = DatasetPreparationArguments(source="s", output_dir="o")
    assert (args.validation_size, args.test_size, args.split_seed, args.on_missing) == (0.15, 0.15, 42, "error")
    with pytest.raises(ValueError, match="must each be in \\(0, 1\\) and sum to less than 1"):
        DatasetPreparationArguments(source="s", output_dir="o", test_size=0.6, validation_size=0.5)
    with pytest.raises(SystemExit) as exited:
        run_script(monkeypatch, "--source", str(synthetic_dir), "--output_dir", str(tmp_path / "o"), "--seed", "7")
    assert exited.value.code == 2 and "error: unrecognized arguments: --seed 7" in capsys.readouterr().err
