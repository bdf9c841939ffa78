"""Publishing to the Hub, tested with the real huggingface_hub / transformers / datasets clients against a fake Hub
on 127.0.0.1 (tests/hub_server.py): push a finished run, download it into a fresh cache in another process, compare.

In this process the clients are pointed at the fake Hub by patching the constants they read at import
(`huggingface_hub.constants.ENDPOINT`, `datasets.config.HF_ENDPOINT`, offline flags); every download runs in a
subprocess whose environment says the same from the start, with a fresh `HF_HOME`, so nothing cached or registered
in this process can make a round trip pass.
"""

import contextlib
import dataclasses
import hashlib
import inspect
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets
import pytest
import torch
from conftest import REMOTE_LOAD, load_script, small_args
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value
from hub_server import FakeHub
from huggingface_hub import ModelCard, constants
from huggingface_hub.errors import HfHubHTTPError

from hf_skin.cli import CommandLineError
from hf_skin.data import DX_LABELS, load_ham10000
from hf_skin.model_card import CARD_HASH_FILE
from hf_skin.runs import RunFolder

TOKEN = "hf_FakeTok3n_7c1d9e_must_never_be_written"
USER = "user"
LIMITS = ["--num_train_epochs", "1", "--max_train_samples", "64", "--max_eval_samples", "32"]


# ---- the fake Hub, and this process pointed at it


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """The fake Hub, with this process's Hugging Face clients online and pointed at it, `HF_TOKEN` = TOKEN."""
    with FakeHub({TOKEN: USER}) as fake, pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "HF_ENDPOINT": fake.url,
            "HF_TOKEN": TOKEN,
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",  # uploads: plain LFS, which the fake speaks (see hub_server.py)
        }.items():
            patch.setenv(name, value)
        patch.setattr(constants, "ENDPOINT", fake.url)
        patch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake.url + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(constants, "HF_HUB_OFFLINE", False)
        patch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        home = tmp_path_factory.mktemp("hf_home")  # only HF_TOKEN counts, not a developer's `hf auth login` token
        patch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
        patch.setattr(constants, "AGENT_HARNESSES_PATH", str(home / "agent_harnesses.json"))
        patch.setattr(datasets.config, "HF_ENDPOINT", fake.url)
        patch.setattr(datasets.config, "HUB_DATASETS_URL", fake.url + "/datasets/{repo_id}/resolve/{revision}/{path}")
        patch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
        patch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
        yield fake
        assert not fake.unhandled, f"the clients called routes the fake Hub does not serve: {fake.unhandled}"


def client_env(hub: FakeHub, home: Path, endpoint: str | None = None) -> dict[str, str]:
    """A download subprocess's environment: online, the fake Hub, a fresh HF_HOME, the token set as a user has it."""
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "HF_HOME": str(home / "hf_home"),
        "HF_SKIN_CACHE": str(home / "hf_skin_cache"),
        "HF_ENDPOINT": endpoint or hub.url,
        "HF_TOKEN": TOKEN,
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def run_client(hub: FakeHub, home: Path, code: str, *args: str, endpoint: str | None = None) -> tuple[dict, str]:
    """Runs `code` in a fresh Python process against the fake Hub; returns (last stdout line as JSON, all output)."""
    home.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=home,
        env=client_env(hub, home, endpoint),
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), output


def assert_token_absent(*, paths: list[Path] = (), texts: list[str] = ()) -> None:
    """TOKEN is in no file under `paths` (recursively) and in none of `texts`."""
    checked = 0
    for root in paths:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                written = TOKEN.encode() in path.read_bytes()
                assert not written, f"the token was written to {path}"
                checked += 1
    assert checked or not paths, f"no files found under {paths}"
    for text in texts:
        shown = TOKEN in text
        assert not shown, "the token appears in the output"


@contextlib.contextmanager
def captured_output():
    """Everything printed and logged (every logger, DEBUG and up) inside the block, as one growing string list."""
    out, handler = io.StringIO(), logging.StreamHandler()
    handler.setStream(out)
    handler.setLevel(logging.DEBUG)
    root, level = logging.getLogger(), logging.getLogger().level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# ---- three finished runs: the CNN pushed by finetune.py itself, multi-input and ViT left for push_to_hub.py


def finetune(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> dict:
    monkeypatch.setattr(sys, "argv", ["finetune.py", *argv])
    return load_script("finetune").main()


@pytest.fixture(scope="module")
def cnn_push(hub, synthetic_dir, tmp_path_factory):
    """A CNN run trained by `finetune.py --push_to_hub`, the token given as a user gives it, in HF_TOKEN (the hub
    fixture sets it; no `hf auth login` file is read): (run dir, everything printed and logged)."""
    out = tmp_path_factory.mktemp("cnn_run") / "run"
    argv = [*small_args(synthetic_dir, out), *LIMITS, "--push_to_hub", "--hub_model_id", f"{USER}/cnn"]
    assert os.environ["HF_TOKEN"] == TOKEN
    with pytest.MonkeyPatch.context() as patch, captured_output() as output:
        finetune(patch, argv)
    return out, output.getvalue()


@pytest.fixture(scope="module")
def multi_input_run(hub, synthetic_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("multi_input_run") / "run"
    argv = small_args(synthetic_dir, out, *LIMITS)
    argv[argv.index("cnn")] = "multi-input"
    with pytest.MonkeyPatch.context() as patch:
        finetune(patch, argv)
    return out


@pytest.fixture(scope="module")
def vit_run(hub, synthetic_dir, tiny_vit_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("vit_run") / "run"
    argv = ["--model", "vit", "--model_name_or_path", str(tiny_vit_checkpoint), "--dataset", str(synthetic_dir)]
    with pytest.MonkeyPatch.context() as patch:
        finetune(patch, [*argv, "--output_dir", str(out), *LIMITS])
    return out


@pytest.fixture(scope="module")
def timm_run(hub, synthetic_dir, tiny_timm_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("timm_run") / "run"
    argv = ["--model", "efficientnet-lite0", "--model_name_or_path", str(tiny_timm_checkpoint)]
    argv += ["--dataset", str(synthetic_dir), "--image_size", "24x32"]
    with pytest.MonkeyPatch.context() as patch:
        finetune(patch, [*argv, "--output_dir", str(out), *LIMITS])
    return out


@pytest.fixture(scope="module")
def pushed(hub, cnn_push, multi_input_run, vit_run, timm_run):
    """repo id -> run dir of every pushed run (multi-input, ViT and timm through scripts/push_to_hub.py)."""
    script = load_script("push_to_hub")
    script.main([str(multi_input_run), f"{USER}/multi-input", "--private"])
    script.main([str(vit_run), f"{USER}/vit"])
    script.main([str(timm_run), f"{USER}/timm"])
    return {
        f"{USER}/cnn": cnn_push[0],
        f"{USER}/multi-input": multi_input_run,
        f"{USER}/vit": vit_run,
        f"{USER}/timm": timm_run,
    }


# ---- pushing


def test_finetune_pushes_the_finished_run_once(hub, cnn_push):
    run_dir, output = cnn_push
    repo = hub.repos[("model", f"{USER}/cnn")]
    # One commit of ours after the repo's initial one: the Trainer pushed no card and no checkpoint of its own.
    assert [c.title for c in repo.commits][1:] == [
        "hf-skin training run: model, processor, modeling code, metrics, model card"
    ]
    files = hub.files("model", f"{USER}/cnn")
    assert set(files) == {".gitattributes", *RunFolder(run_dir).published_files()}
    assert {
        "README.md", "config.json", "model.safetensors", "modeling_cnn.py", "configuration_cnn.py",
        "preprocessor_config.json", "run_args.json", "test_metrics.json", "validation_metrics.json",
        "all_results.json", "trainer_state.json", "test_confusion_matrix.png", "test_confusion_matrix_normalized.png",
    } <= set(files)  # fmt: skip
    assert not any(name.startswith("checkpoint-") or name.endswith((".bin", ".pt", ".pth")) for name in files)
    for name in set(RunFolder(run_dir).published_files()) - {"run_state.json"}:
        assert files[name] == (run_dir / name).read_bytes(), name
    # the run was finished when it was pushed; the folder's state adds where it went (and when that was recorded)
    state, published = json.loads((run_dir / "run_state.json").read_text()), json.loads(files["run_state.json"])
    assert state.pop("hub_url") == f"{hub.url}/{USER}/cnn" and published["status"] == state["status"] == "finished"
    assert {k: v for k, v in published.items() if k != "finished"} == {
        k: v for k, v in state.items() if k != "finished"
    }
    assert {"model.safetensors", "test_confusion_matrix.png"} <= repo.commits[-1].lfs  # binary files went by LFS
    assert f"Published:          {hub.url}/{USER}/cnn" in output
    # HF_TOKEN was used for the push and is in no file of the run (training_args.bin included) and in no output
    assert_token_absent(paths=[run_dir], texts=[output])
    assert not any(TOKEN.encode() in content for content in files.values())
    assert json.loads(files["run_args.json"])["hub_model_id"] == f"{USER}/cnn"


def test_push_script_publishes_a_finished_run(hub, pushed, tmp_path, capsys):
    assert hub.repos[("model", f"{USER}/multi-input")].private
    assert not hub.repos[("model", f"{USER}/vit")].private
    files = hub.files("model", f"{USER}/multi-input")
    # multi-input's remote code imports the CNN's; its processor reads metadata_processor.json
    expected = {
        "modeling_multi_input.py",
        "configuration_multi_input.py",
        "modeling_cnn.py",
        "metadata_processor.json",
    }
    assert expected <= set(files)
    assert set(hub.files("model", f"{USER}/vit")) == {
        ".gitattributes",
        *RunFolder(pushed[f"{USER}/vit"]).published_files(),
    }
    for run_dir in pushed.values():
        assert_token_absent(paths=[run_dir])

    # Pushing another run to the same repo replaces it: files the new run lacks are deleted in the same commit.
    script = load_script("push_to_hub")
    multi_input = shutil.copytree(pushed[f"{USER}/multi-input"], tmp_path / "multi_input")
    vit = shutil.copytree(pushed[f"{USER}/vit"], tmp_path / "vit")
    script.main([str(multi_input), f"{USER}/replaced"])
    gone = sorted(set(hub.files("model", f"{USER}/replaced")) - {".gitattributes", *RunFolder(vit).published_files()})
    assert "modeling_multi_input.py" in gone and "metadata_processor.json" in gone

    # --dry_run says so beforehand, and changes nothing: no commit, and the run folder's card is left as it is
    commits, card = list(hub.repos[("model", f"{USER}/replaced")].commits), (vit / "README.md").read_bytes()
    capsys.readouterr()
    plan = script.main([str(vit), f"{USER}/replaced", "--dry_run"])
    printed = capsys.readouterr().out
    assert hub.repos[("model", f"{USER}/replaced")].commits == commits
    assert (vit / "README.md").read_bytes() == card
    assert plan.deletions == gone and plan.uploads == RunFolder(vit).published_files() and plan.repo_exists
    assert f"Dry run: nothing was changed, neither on the Hub nor in {vit}." in printed
    assert f"delete {len(gone)} files the run does not have:\n" + "".join(f"    {n}\n" for n in gone) in printed
    listed = "".join(f"    {n}\n" for n in RunFolder(vit).published_files())
    assert f"upload {len(plan.uploads)} files:\n{listed}" in printed
    assert "(an existing repo)" in printed and "unknown offline" not in printed  # a token and the Hub: asked
    assert "README.md: the generated model card, replacing the one hf-skin wrote before" in printed
    script.main([str(tmp_path / "vit"), f"{USER}/not-yet", "--dry_run"])
    assert "(a new repo)" in capsys.readouterr().out and ("model", f"{USER}/not-yet") not in hub.repos

    # the push itself logs the deletions before it makes them
    with captured_output() as output:
        assert script.main([str(vit), f"{USER}/replaced"]) == f"{hub.url}/{USER}/replaced"
    assert f"Deleting {len(gone)} files of {USER}/replaced that this run does not have: {', '.join(gone)}" in (
        output.getvalue()
    )
    assert set(hub.files("model", f"{USER}/replaced")) == {".gitattributes", *RunFolder(vit).published_files()}
    assert "modeling_multi_input.py" in hub.repos[("model", f"{USER}/replaced")].commits[-2].files
    assert f"pushed: {hub.url}/{USER}/replaced" in output.getvalue()
    assert_token_absent(texts=[printed, output.getvalue()])


def test_push_publishes_only_the_listed_files(hub, pushed, tmp_path):
    run_dir = shutil.copytree(pushed[f"{USER}/cnn"], tmp_path / "cnn")
    (run_dir / "notes.json").write_text('{"todo": "ask the dermatologist"}')
    (run_dir / "x.py").write_text("print('scratch')\n")
    (run_dir / "checkpoint-1").mkdir()
    (run_dir / "checkpoint-1" / "model.safetensors").write_bytes(b"old weights")
    (run_dir / "training_args.bin").write_bytes(b"pickle")
    load_script("push_to_hub").main([str(run_dir), f"{USER}/listed"])
    files = set(hub.files("model", f"{USER}/listed"))
    assert files == {".gitattributes", *RunFolder(run_dir).published_files()}
    assert {"config.json", "model.safetensors", "README.md", "modeling_cnn.py"} <= files
    for local_only in ("notes.json", "x.py", "checkpoint-1/model.safetensors", "training_args.bin", CARD_HASH_FILE):
        assert local_only not in files
    assert "split.json" not in files  # the lesion ids stay local


def test_push_never_replaces_a_hand_edited_card_silently(hub, pushed, tmp_path, capsys):
    script = load_script("push_to_hub")
    run_dir = shutil.copytree(pushed[f"{USER}/cnn"], tmp_path / "cnn")
    script.main([str(run_dir), f"{USER}/edited"])
    generated = hub.files("model", f"{USER}/edited")["README.md"]
    assert (run_dir / "README.md").read_bytes() == generated
    script.main([str(run_dir), f"{USER}/edited"])  # a card hf-skin wrote is written again without asking

    edited = generated.replace(b"## Intended use", b"## Intended use\n\nReviewed by our dermatologist.\n")
    (run_dir / "README.md").write_bytes(edited)
    commits = list(hub.repos[("model", f"{USER}/edited")].commits)
    with pytest.raises(CommandLineError, match="README.md is not the model card hf-skin last wrote there") as err:
        script.main([str(run_dir), f"{USER}/edited"])
    assert "--keep_card" in str(err.value) and "--overwrite_card" in str(err.value)
    with pytest.raises(CommandLineError, match="is not the model card hf-skin last wrote"):
        script.main([str(run_dir), f"{USER}/edited", "--dry_run"])
    assert hub.repos[("model", f"{USER}/edited")].commits == commits  # nothing pushed
    assert (run_dir / "README.md").read_bytes() == edited  # nothing replaced

    script.main([str(run_dir), f"{USER}/edited", "--keep_card"])  # published as it is
    assert hub.files("model", f"{USER}/edited")["README.md"] == edited == (run_dir / "README.md").read_bytes()
    script.main([str(run_dir), f"{USER}/edited", "--overwrite_card"])  # replaced by the generated card
    assert hub.files("model", f"{USER}/edited")["README.md"] == generated == (run_dir / "README.md").read_bytes()
    with pytest.raises(SystemExit):  # one or the other
        script.main([str(run_dir), f"{USER}/edited", "--keep_card", "--overwrite_card"])

    # a README.md hf-skin never wrote (no record of its card) is not replaced either
    (run_dir / CARD_HASH_FILE).unlink()
    (run_dir / "README.md").write_text("# My notes on this run\n")
    with pytest.raises(CommandLineError, match="is not the model card hf-skin last wrote"):
        script.main([str(run_dir), f"{USER}/edited"])
    assert (run_dir / "README.md").read_text() == "# My notes on this run\n"


def test_tokens_are_refused_on_the_command_line(hub, synthetic_dir, tmp_path, monkeypatch, pushed):
    out = tmp_path / "run"
    for flag in (["--hub_token", TOKEN], [f"--hub_token={TOKEN}"]):
        with pytest.raises(CommandLineError) as err:
            finetune(monkeypatch, [*small_args(synthetic_dir, out), "--push_to_hub", "--hub_model_id", "u/m", *flag])
        message = str(err.value)
        assert "--hub_token is not accepted on the command line: set HF_TOKEN in the environment or run `hf auth " in (
            message
        )
        assert_token_absent(texts=[message])
    assert not out.exists()  # refused before anything was written
    with pytest.raises(CommandLineError, match="--token is not accepted on the command line: set HF_TOKEN"):
        load_script("push_to_hub").main([str(pushed[f"{USER}/cnn"]), f"{USER}/x", "--token", TOKEN])
    monkeypatch.setattr(sys, "argv", [
        "prepare_dataset.py", "--source", str(synthetic_dir), "--output_dir", str(out),
        "--push_to_hub", f"{USER}/d", "--hub_token", TOKEN,
    ])  # fmt: skip
    with pytest.raises(CommandLineError, match="--hub_token is not accepted on the command line: set HF_TOKEN"):
        load_script("prepare_dataset").main()
    from hf_skin.preparation import DatasetPreparationArguments

    assert "hub_token" not in {f.name for f in dataclasses.fields(DatasetPreparationArguments)}
    assert not out.exists() and ("model", f"{USER}/x") not in hub.repos


# ---- downloading through the fake Hub, in fresh processes


def predictions(name_or_path: str, side: str, metadata: str) -> dict:
    """Logits of `AutoModelForImageClassification` on a seeded batch and `SkinClassifier` probabilities on a seeded
    image (run here and, by source, in the download subprocess)."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoModelForImageClassification

    import hf_skin.models  # noqa: F401  (registers hf-skin's families with the Auto classes)
    from hf_skin.inference import SkinClassifier

    model = AutoModelForImageClassification.from_pretrained(name_or_path).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model(torch.randn(2, 3, int(side), int(side))).logits
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    probs = SkinClassifier.from_pretrained(name_or_path).predict_proba(image, **json.loads(metadata))
    return {"class": type(model).__name__, "logits": logits.tolist(), "probs": probs.tolist()}


DOWNLOAD = "import json, sys\n" + inspect.getsource(predictions) + "print(json.dumps(predictions(*sys.argv[1:])))\n"
METADATA = {f"{USER}/multi-input": {"age": "45", "sex": "female", "localization": "back"}}


@pytest.mark.parametrize("repo_id", [f"{USER}/cnn", f"{USER}/multi-input", f"{USER}/vit", f"{USER}/timm"])
def test_pushed_run_loads_back_identically(hub, pushed, repo_id, tmp_path):
    metadata = json.dumps(METADATA.get(repo_id, {}))
    local = predictions(str(pushed[repo_id]), "32", metadata)
    downloaded, output = run_client(hub, tmp_path / "client", DOWNLOAD, repo_id, "32", metadata)
    assert downloaded["class"] == local["class"]
    atol = 1e-6 if repo_id.endswith("timm") else 0  # the same weights; timm's conv kernels may differ by 1e-9
    torch.testing.assert_close(torch.tensor(downloaded["logits"]), torch.tensor(local["logits"]), rtol=0, atol=atol)
    torch.testing.assert_close(torch.tensor(downloaded["probs"]), torch.tensor(local["probs"]), rtol=0, atol=atol)
    snapshot = tmp_path / "client" / "hf_home" / "hub" / f"models--{repo_id.replace('/', '--')}"
    assert (next(snapshot.glob("snapshots/*")) / "model.safetensors").is_file()  # it came through the cache
    assert_token_absent(paths=[tmp_path / "client"], texts=[output])


@pytest.mark.parametrize("repo_id", [f"{USER}/cnn", f"{USER}/multi-input"])
def test_pushed_run_loads_without_hf_skin(hub, pushed, repo_id, tmp_path):
    logits, output = run_client(hub, tmp_path / "client", REMOTE_LOAD, repo_id)
    local = predictions(str(pushed[repo_id]), "32", "{}")
    torch.testing.assert_close(torch.tensor(logits), torch.tensor(local["logits"]), rtol=0, atol=0)
    assert list((tmp_path / "client" / "hf_home" / "modules").rglob("modeling_*.py"))  # the code came from the Hub
    assert_token_absent(paths=[tmp_path / "client"], texts=[output])


LOAD_DATASET = textwrap.dedent(
    """
    import hashlib, json, sys
    import datasets
    from hf_skin.data import load_ham10000
    splits = load_ham10000(sys.argv[1])
    print(json.dumps({
        name: {
            "features": split.features.to_dict(),
            "image_id": list(split["image_id"]),
            "images": hashlib.sha256(b"".join(
                row["bytes"] for row in split.cast_column("image", datasets.Image(decode=False))["image"]
            )).hexdigest(),
        }
        for name, split in splits.items()
    }))
    """
)


def test_pushed_dataset_loads_back_with_its_features_and_splits(hub, synthetic_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "prepared"
    monkeypatch.setattr(sys, "argv", [
        "prepare_dataset.py", "--source", str(synthetic_dir), "--output_dir", str(out),
        "--push_to_hub", f"{USER}/ham10000", "--private", "--cache_dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    load_script("prepare_dataset").main()  # the token from HF_TOKEN
    printed = capsys.readouterr()
    assert f"pushed:  {hub.url}/datasets/{USER}/ham10000" in printed.out
    repo = hub.repos[("dataset", f"{USER}/ham10000")]
    assert repo.private
    # One commit: card, plots and data together (a failure leaves the repo as it was: the next test)
    assert [c.title for c in repo.commits[1:]] == ["HAM10000 splits (parquet), dataset card and data-analysis plots"]
    files = hub.files("dataset", f"{USER}/ham10000")
    assert {f"plots/{png.name}" for png in (out / "plots").glob("*.png")} < set(files)
    assert {"data/train-00000-of-00001.parquet", "data/test-00000-of-00001.parquet"} < set(files)
    readme = files["README.md"].decode()
    assert "configs:" in readme and "dataset_info:" in readme and "No lesion appears in more than one split" in readme
    assert readme.split("\n---\n", 1)[1] == (out / "README.md").read_text().split("\n---\n", 1)[1]  # our card

    downloaded, output = run_client(hub, tmp_path / "client", LOAD_DATASET, f"{USER}/ham10000")
    expected = load_ham10000(synthetic_dir, cache_dir=tmp_path / "cache")
    assert list(downloaded) == list(expected) == ["train", "validation", "test"]
    for name, split in expected.items():
        assert downloaded[name]["features"] == split.features.to_dict()
        assert downloaded[name]["image_id"] == list(split["image_id"])
        images = b"".join(row["bytes"] for row in split.cast_column("image", datasets.Image(decode=False))["image"])
        assert downloaded[name]["images"] == hashlib.sha256(images).hexdigest()
    assert_token_absent(paths=[out, tmp_path / "client"], texts=[printed.out, printed.err, output])

    # The Hub gone (nothing listens at the endpoint, HF_HUB_OFFLINE unset): the copy in the cache still loads.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        gone = f"http://127.0.0.1:{probe.getsockname()[1]}"
    offline, output = run_client(hub, tmp_path / "client", LOAD_DATASET, f"{USER}/ham10000", endpoint=gone)
    assert offline == downloaded, output[-2000:]


def tiny_dataset(lesions: list[str], dx: list[int]) -> DatasetDict:
    features = Features({"lesion_id": Value("string"), "dx": ClassLabel(names=DX_LABELS)})
    half = len(lesions) // 2
    return DatasetDict(
        {
            "train": Dataset.from_dict({"lesion_id": lesions[:half], "dx": dx[:half]}, features=features),
            "test": Dataset.from_dict({"lesion_id": lesions[half:], "dx": dx[half:]}, features=features),
        }
    )


def test_a_failed_dataset_push_leaves_the_repo_as_it_was(hub, tmp_path):
    from hf_skin.dataset_card import dataset_card
    from hf_skin.preparation import push_dataset_to_hub

    def push(data: DatasetDict, plots: Path | None = None) -> str:
        card = dataset_card(data, source_description="a test.", split_description="by hand.")
        return push_dataset_to_hub(data, f"{USER}/atomic", card=card, plots_dir=plots)

    push(tiny_dataset(["L1", "L2", "L3", "L4"], [5, 4, 5, 0]))
    repo = hub.repos[("dataset", f"{USER}/atomic")]
    commits, files = list(repo.commits), hub.files("dataset", f"{USER}/atomic")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "class_counts.png").write_bytes(b"\x89PNG\r\n\x1a\n\0not really")
    with hub.refusing_commits("*.parquet"), pytest.raises(HfHubHTTPError, match="500"):
        push(tiny_dataset(["L5", "L6", "L7", "L8", "L9", "L10"], [1, 2, 3, 4, 5, 6]), plots)
    assert repo.commits == commits  # no card, plots or data of the failed push went in
    assert hub.files("dataset", f"{USER}/atomic") == files

    push(tiny_dataset(["L5", "L6", "L7", "L8", "L9", "L10"], [1, 2, 3, 4, 5, 6]), plots)  # the retry, in one commit
    assert len(repo.commits) == len(commits) + 1
    assert {"README.md", "plots/class_counts.png", "data/train-00000-of-00001.parquet"} < set(repo.commits[-1].files)
    assert "L10" in hub.files("dataset", f"{USER}/atomic")["data/test-00000-of-00001.parquet"].decode("latin-1")


# ---- the model card


def test_model_card_of_a_run(pushed):
    run_dir = pushed[f"{USER}/cnn"]
    card = ModelCard.load(run_dir / "README.md")  # as pushed
    test_metrics = json.loads((run_dir / "test_metrics.json").read_text())
    assert card.data.license == "cc-by-nc-4.0" and card.data.pipeline_tag == "image-classification"
    results = {r.metric_type: r for r in card.data.eval_results}
    assert set(results) == {"accuracy", "balanced_accuracy", "f1"}
    assert results["accuracy"].metric_value == test_metrics["accuracy"]
    assert results["balanced_accuracy"].metric_value == test_metrics["balanced_accuracy"]
    assert results["balanced_accuracy"].metric_name == "Balanced accuracy"
    assert results["f1"].metric_value == test_metrics["f1_macro"] and results["f1"].metric_args == {"average": "macro"}
    for result in results.values():  # trained on synthetic lesions: the card does not call its test set HAM10000
        assert (result.dataset_name, result.dataset_split, result.task_type) == (
            "synthetic lesions (hf-skin), not real skin",
            "test",
            "image-classification",
        )
    assert card.data.base_model is None  # the CNN starts from scratch

    headings = [line for line in card.text.splitlines() if line.startswith("## ")]
    for section in ("Usage", "Intended use", "Limitations", "Training", "Evaluation", "License", "Citation"):
        assert f"## {section}" in headings
    for dx in DX_LABELS:  # the per-class table: precision and recall as in test_metrics.json, with the support
        m = test_metrics["per_class"][dx]
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {dx} | "))
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert cells[2:4] == [f"{m['precision']:.3f}", f"{m['recall']:.3f}"] and cells[-1] == str(m["support"])
    for dx in ("df", "vasc"):  # the real test support counts, in Limitations
        assert f"({dx}) {test_metrics['per_class'][dx]['support']}" in card.text
    assert "Not a medical device" in card.text and "smartphone" in card.text and "fair-skinned" in card.text
    assert "![Confusion matrix on the test split (counts)](test_confusion_matrix.png)" in card.text
    assert "seed 42" in card.text and "split **by lesion**" in card.text
    assert "| learning rate | `0.001` |" in card.text and "| class balancing | `oversample` |" in card.text
    assert "10.1038/sdata.2018.161" in card.text and "@article{tschandl2018ham10000" in card.text
    assert 'from_pretrained("user/cnn", trust_remote_code=True)' in card.text


# Builds the model card of each run (argv[1]: {repo id: run dir}) and imports the rest of the Hub side, then prints
# the cards and whether torch was imported.
CARDS_WITHOUT_TORCH = textwrap.dedent(
    """
    import json, sys
    from hf_skin.model_card import model_card
    cards = {repo_id: str(model_card(path, repo_id=repo_id)) for repo_id, path in json.loads(sys.argv[1]).items()}
    import hf_skin.dataset_card, hf_skin.hub, hf_skin.preparation
    print(json.dumps({"cards": cards, "torch": "torch" in sys.modules}))
    """
)


def test_model_cards_are_built_without_torch(hub, pushed, tmp_path):
    runs = {repo_id: str(run_dir) for repo_id, run_dir in pushed.items()}
    result, _ = run_client(hub, tmp_path / "client", CARDS_WITHOUT_TORCH, json.dumps(runs))
    assert result["torch"] is False
    for repo_id, run_dir in pushed.items():  # the same card as the one pushed from a process that had torch
        assert result["cards"][repo_id] == (run_dir / "README.md").read_text(), repo_id


def test_run_args_json_reruns_the_run(pushed):
    from dataclasses import asdict

    from hf_skin.training import parse_args

    run_dir = pushed[f"{USER}/multi-input"]
    saved = json.loads((run_dir / "run_args.json").read_text())
    model_args, data_args, training_args = parse_args([str(run_dir / "run_args.json")])
    assert {**asdict(model_args), **asdict(data_args), **training_args.to_dict()} == {
        **saved,
        "hub_token": "<HUB_TOKEN>",  # how to_dict() shows a token field; the file leaves them out
    }
    assert model_args.model == "multi-input" and data_args.max_train_samples == 64


def test_model_card_names_the_base_model(pushed, tmp_path):
    from hf_skin.model_card import model_card

    run_dir = shutil.copytree(pushed[f"{USER}/vit"], tmp_path / "vit")
    args = json.loads((run_dir / "run_args.json").read_text())
    assert model_card(run_dir).data.base_model is None  # a local checkpoint is no Hub base model
    (run_dir / "run_args.json").write_text(json.dumps({**args, "model_name_or_path": None}))
    card = model_card(run_dir, repo_id="someone/vit-ham")
    assert card.data.base_model == "google/vit-base-patch16-224"  # --model vit's default checkpoint
    assert "[`google/vit-base-patch16-224`](https://huggingface.co/google/vit-base-patch16-224)" in card.text
    assert card.data.model_name == "vit-ham" and card.data.eval_results[0].metric_type == "accuracy"
    (run_dir / "run_args.json").write_text(
        json.dumps({**args, "model": "multi-input", "backbone": "resnet101", "model_name_or_path": None})
    )
    assert model_card(run_dir).data.base_model == "microsoft/resnet-101"


def test_model_card_of_a_timm_run(pushed, tmp_path):
    from hf_skin.model_card import model_card

    run_dir = shutil.copytree(pushed[f"{USER}/timm"], tmp_path / "timm")
    args = json.loads((run_dir / "run_args.json").read_text())
    (run_dir / "run_args.json").write_text(json.dumps({**args, "model_name_or_path": None}))
    card = model_card(run_dir, repo_id="someone/lite0-ham")
    assert card.data.base_model == "timm/tf_efficientnet_lite0.in1k"  # --model efficientnet-lite0's checkpoint
    assert "timm's `test_efficientnet`" in card.text and "32×24 pixels (width × height)" in card.text
    assert 'pipeline("image-classification", model="someone/lite0-ham")' in card.text  # no remote code


# ---- bad input


def test_push_script_names_what_is_wrong(hub, pushed, tmp_path, monkeypatch, caplog):
    script = load_script("push_to_hub")
    # the Hub refuses: one error line with what to check, and the log says the run is intact and how to retry
    with pytest.raises(CommandLineError, match="(?s)^error: the Hub refused .*403.*write access to someone-else/x"):
        script.main([str(pushed[f"{USER}/cnn"]), "someone-else/x"])
    assert f"is intact: push it again with hf-skin push {pushed[f'{USER}/cnn']} someone-else/x" in caplog.text
    # mistakes on the command line: one error line, no traceback
    with pytest.raises(CommandLineError, match="does not exist or is not a folder"):
        script.main([str(tmp_path / "missing"), f"{USER}/x"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CommandLineError, match="holds no saved model"):
        script.main([str(tmp_path / "empty"), f"{USER}/x"])
    unfinished = shutil.copytree(pushed[f"{USER}/cnn"], tmp_path / "unfinished")
    (unfinished / "test_metrics.json").unlink()
    with pytest.raises(CommandLineError, match="no test_metrics.json: the run did not finish its test evaluation"):
        script.main([str(unfinished), f"{USER}/x"])
    with pytest.raises(CommandLineError, match="'user/bad name' is not a valid Hub repo id"):
        script.main([str(pushed[f"{USER}/cnn"]), f"{USER}/bad name"])
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(CommandLineError, match="^error: no Hugging Face token found: set HF_TOKEN .* `hf auth login`"):
        script.main([str(pushed[f"{USER}/cnn"]), f"{USER}/x"])
    assert ("model", f"{USER}/x") not in hub.repos  # nothing was created by any of these


def test_finetune_push_without_token_fails_before_training(hub, synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    out = tmp_path / "run"
    with pytest.raises(CommandLineError, match="^error: no Hugging Face token found: set HF_TOKEN"):
        finetune(monkeypatch, [*small_args(synthetic_dir, out), *LIMITS, "--push_to_hub", "--hub_model_id", "u/m"])
    assert not out.exists()  # no training happened
    with pytest.raises(CommandLineError, match="^error: .*not a valid Hub repo id"):
        finetune(monkeypatch, [*small_args(synthetic_dir, out), "--push_to_hub", "--hub_model_id", "a/b/c"])


def test_model_card_names_the_study_cnn_only_when_it_is_the_studys():
    from hf_skin.model_card import _family
    from hf_skin.models import build_model

    assert _family(build_model("cnn").config.to_dict()).startswith("the HAM10000 study's CNN")
    deeper = _family(build_model("cnn", image_size=64, hidden_sizes=[32, 64, 128]).config.to_dict())
    assert "image_size 64" in deeper and "hidden_sizes [32, 64, 128]" in deeper and "the HAM10000" not in deeper
    multi = _family(build_model("multi-input", hidden_sizes=[8]).config.to_dict())
    assert "reads age, sex, localization" in multi and "hidden_sizes [8]" in multi


def test_model_card_says_whether_int8_holds_an_int8_ready_models_input_exactly():
    """The saved processor decides: a mean rounded to 128/255 or a processor on a pixel grid already (no rounding
    to report) give exact inputs; ImageNet's per-channel statistics leave the input's rounding too."""
    from hf_skin.model_card import _int8_ready_text

    ready = {"steps": 300, "training_images": 2048, "learning_rate": 2e-6, "image_mean_before": [0.5, 0.5, 0.5]}
    aligned = {"do_rescale": True, "rescale_factor": 1 / 255, "image_mean": [128 / 255] * 3, "image_std": [0.5] * 3}
    imagenet = {**aligned, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    text = _int8_ready_text({"int8_ready": ready}, aligned)
    assert (
        "8-bit pixels are int8 numbers too (its normalisation mean was rounded from 0.5, 0.5, 0.5 to a whole" in text
    )
    assert "2,048 training images" in text and "only by the rounding of activations." in text
    text = _int8_ready_text({"int8_ready": {**ready, "image_mean_before": None}}, aligned)
    assert "rounded from" not in text and "int8 numbers too (its normalisation puts them on int8's grid)" in text
    text = _int8_ready_text({"int8_ready": {**ready, "image_mean_before": None}}, imagenet)
    assert "int8 numbers too" not in text and "only by the rounding of its input and activations." in text
    assert _int8_ready_text({}, aligned) == ""
