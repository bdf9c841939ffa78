"""The command lines (hf_skin.cli): one `hf-skin` command and its aliases, as a user runs them (exit status 0, or one
`error:` line), a readable `--help`, no tokens and no abbreviations; scripts as thin shims; the library neither
prints nor configures logging."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hf_skin.cli import ALIASES, COMMANDS, TRAIN_GROUPS, CommandLineError, flag_spelling, main, refuse_tokens

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_script_runs_from_its_folder(script):
    # scripts/ is sys.path[0] here, scripts/evaluate.py among them: every script still runs.
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: {script.name} ")


def test_only_the_metric_module_imports_the_evaluate_library():
    # `python scripts/X.py` puts scripts/ first on sys.path, where scripts/evaluate.py would shadow the `evaluate`
    # library. hf-skin's commands never import that library (only hf_skin.metric_module, which users load with
    # `evaluate.load`), so no sys.path edit is needed.
    for path in sorted((ROOT / "hf_skin").rglob("*.py")):
        if path.name == "metric_module.py":
            continue
        tree = ast.parse(path.read_text())
        names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {n for n in names if n.split(".")[0] == "evaluate"}, path.name


def test_scripts_are_shims_over_the_cli():
    for script in SCRIPTS:
        tree = ast.parse(script.read_text())
        imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert [node.module for node in imports] == ["hf_skin.cli"], script.name
        assert "sys.path" not in script.read_text(), script.name


def test_library_code_neither_prints_nor_configures_logging():
    for path in sorted((ROOT / "hf_skin").rglob("*.py")):
        if path.parent.name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                assert name not in ("print", "basicConfig"), f"{path.name}:{node.lineno} calls {name}"


def test_console_commands_are_installed():
    from importlib.metadata import entry_points

    commands = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("hf-skin")}
    assert commands["hf-skin"] == "hf_skin.cli:main"
    # the one-command names of before are aliases of a subcommand each
    assert {name: commands[name] for name in ALIASES} == dict.fromkeys(ALIASES, "hf_skin.cli:main")
    assert set(ALIASES.values()) <= set(COMMANDS)
    assert set(commands) == {"hf-skin", *ALIASES}


def test_synthetic_module_still_writes_a_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_skin.synthetic", str(tmp_path / "s"), "--num_lesions", "14", "--no_masks"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote" in result.stdout and (tmp_path / "s" / "HAM10000_metadata.csv").is_file()


# ---------------------------------------------------------------------------------------------------------------
# The console commands as a user runs them: exit status 0 on success, one `error:` line on a failure


@pytest.fixture(scope="module")
def no_login(tmp_path_factory) -> Path:
    """An HF_HOME without an `hf auth login` token."""
    return tmp_path_factory.mktemp("hf_home")


def hf_skin(*args, command: str = "hf-skin", home: Path | None = None, cwd=None) -> subprocess.CompletedProcess:
    """A console command in a fresh process, offline and with no token anywhere."""
    env = {key: value for key, value in os.environ.items() if key != "HF_TOKEN"}
    env.update(HF_HUB_OFFLINE="1", **({"HF_HOME": str(home)} if home else {}))
    return subprocess.run(
        [str(BIN / command), *map(str, args)], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def assert_one_error_line(result: subprocess.CompletedProcess, match: str) -> None:
    assert result.returncode != 0, result.stdout[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and match in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """`hf-skin synthetic` then `hf-skin train`: a tiny finished run, made as a user makes one."""
    from conftest import small_args

    root = tmp_path_factory.mktemp("cli")
    made = hf_skin("synthetic", root / "data", "--num_lesions", 21, "--no_masks")
    assert made.returncode == 0, made.stderr[-3000:]
    trained = hf_skin("train", *small_args(root / "data", root / "run"), "--num_train_epochs", 1)
    assert trained.returncode == 0, trained.stderr[-3000:]  # exit status 1 before: the entry point returned a dict
    assert "Test accuracy" in trained.stdout
    return root


def test_every_console_command_exits_zero_on_success(cli_run, no_login):
    """Each of the console commands does its work and exits 0 (the `hf-skin-*` ones exited 1: they returned a dict
    to `sys.exit`); `hf-skin synthetic` and `hf-skin train` made the run (cli_run)."""
    from conftest import small_args

    run, data = cli_run / "run", cli_run / "data"
    # Without --dataset, a run is evaluated on its own data (it went to the Hub before: a traceback offline).
    for args, command in (
        (["--model", run, "--bootstrap_resamples", 0], "hf-skin-evaluate"),
        (["--model", run, "--output_dir", cli_run / "recalibrated"], "hf-skin-calibrate"),
        ([run, "--output_dir", cli_run / "compare", "--bootstrap_resamples", 0], "hf-skin-compare"),
        (["--source", data, "--output_dir", cli_run / "prepared"], "hf-skin-prepare-dataset"),
        ([run, cli_run / "export"], "hf-skin-export-onnx"),
        ([run, "someone/tiny", "--dry_run"], "hf-skin-push"),
        ([*small_args(data, cli_run / "again"), "--max_steps", 1, "--train_metrics_samples", 0], "hf-skin-finetune"),
    ):
        result = hf_skin(*args, command=command, home=no_login)
        assert result.returncode == 0, (command, result.stderr[-3000:])
        assert result.stdout, command  # what it did, for the person who ran it
    assert f"test split of {data}, " in hf_skin("evaluate", "--model", run, "--bootstrap_resamples", 0).stdout
    assert (run / "evaluation" / f"{data.name}-test" / "metrics.json").is_file()
    assert (cli_run / "recalibrated" / "calibration.json").is_file()
    assert (cli_run / "compare" / "comparison.md").is_file()
    assert (cli_run / "prepared" / "README.md").is_file()
    assert (cli_run / "export" / "model.onnx").is_file()
    assert (cli_run / "again" / "all_results.json").is_file()
    assert hf_skin("--help").returncode == 0 and hf_skin("--version").returncode == 0


def test_a_dry_run_needs_neither_token_nor_hub_and_shows_the_card(cli_run, no_login):
    readme = cli_run / "run" / "README.md"
    before = readme.read_bytes() if readme.exists() else None
    result = hf_skin("push", cli_run / "run", "someone/tiny", "--dry_run", home=no_login)
    assert (readme.read_bytes() if readme.exists() else None) == before  # the run folder is left as it is
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "The model card it would publish (README.md):\n\n---\n" in out and "\n## " in out  # metadata, sections
    assert "    model.safetensors\n" in out and "    config.json\n" in out  # the file plan
    assert "which ones is unknown offline" in out
    assert "Unknown offline, with no token to ask the Hub (HF_TOKEN or `hf auth login`): whether someone/tiny" in out
    assert out.rstrip().endswith(f"Dry run: nothing was changed, neither on the Hub nor in {cli_run / 'run'}.")


# One failure of each console command: (command, arguments, what its error line names); {tmp} is a new folder.
FAILURES = [
    ("hf-skin", ["nonsense"], "no command 'nonsense'"),
    ("hf-skin-finetune", ["--dataset", "{tmp}/empty", "--output_dir", "{tmp}/o"], "empty"),
    ("hf-skin-evaluate", ["--model", "{tmp}/nothing"], "--model {tmp}/nothing: no such checkpoint folder"),
    ("hf-skin-calibrate", ["--model", "{tmp}/m", "--output_dir", "{tmp}/o", "--dataset", "{tmp}/nothing"], "nothing"),
    ("hf-skin-compare", ["{tmp}/nothing"], "{tmp}/nothing has no all_results.json"),
    ("hf-skin-prepare-dataset", ["--source", "{tmp}/nothing", "--output_dir", "{tmp}/o"], "no such folder"),
    ("hf-skin-export-onnx", ["{tmp}/nothing", "{tmp}/o"], "{tmp}/nothing does not exist"),
    ("hf-skin-push", ["{tmp}/nothing", "user/x", "--dry_run"], "{tmp}/nothing does not exist"),
]


@pytest.mark.parametrize("command, args, match", FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failure_of_each_console_command_is_one_error_line(command, args, match, tmp_path):
    (tmp_path / "empty").mkdir()
    result = hf_skin(*[a.format(tmp=tmp_path) for a in args], command=command)
    assert_one_error_line(result, match.format(tmp=tmp_path))
    assert result.returncode == 1


def test_a_hub_dataset_offline_is_one_error_line(cli_run):
    # A Hub dataset without the Hub: one line, not a 40-line traceback.
    result = hf_skin("evaluate", "--model", cli_run / "run", "--dataset", "nobody/no-such-data", "--split", "all")
    assert_one_error_line(result, "nobody/no-such-data")


def test_a_mistake_on_the_command_line_is_the_usage_and_one_error_line(cli_run):
    result = hf_skin("train", "--model", "nonsense")
    assert_one_error_line(result, "argument --model: invalid choice: 'nonsense'")
    # the usage is two lines, not the 130 lines of every flag, and names the subcommand
    assert result.returncode == 2 and result.stderr.splitlines()[0].startswith("usage: hf-skin train [--model NAME]")
    assert len(result.stderr.splitlines()) == 3, result.stderr
    result = hf_skin("compare", command="hf-skin")
    assert_one_error_line(result, "the following arguments are required: RUN_DIR")
    assert result.stderr.startswith("usage: hf-skin compare ")


# ---------------------------------------------------------------------------------------------------------------
# The library's errors in a command line's words


def test_data_errors_give_their_advice_in_flag_spelling(synthetic_dir, tmp_path):
    # A metadata row whose image is gone: hf_skin.data says on_missing='skip', the user reads --on_missing skip.
    data = shutil.copytree(synthetic_dir, tmp_path / "data")
    image = next(data.rglob("*.jpg"))
    image.unlink()
    with pytest.raises(CommandLineError, match=f"lists {image.stem} but no image file") as err:
        main(["train", "--dataset", str(data), "--output_dir", str(tmp_path / "run")])
    assert "pass --on_missing skip to drop these rows" in str(err.value) and "on_missing=" not in str(err.value)
    with pytest.raises(CommandLineError, match="^error: --num_lesions 3 is too small"):
        main(["synthetic", str(tmp_path / "s"), "--num_lesions", "3"])


def test_library_advice_reads_as_flags_the_command_has():
    assert flag_spelling("pass on_missing='skip' to drop them") == "pass --on_missing skip to drop them"
    assert flag_spelling("or with_masks=False; resplit=True") == "or --no_with_masks; --resplit"
    # Only advice that the command can follow: `hf-skin train` has no --no_with_masks, `export` no --on_missing.
    train = {"--on_missing", "--dataset"}
    assert flag_spelling("on_missing='skip' (or with_masks=False)", train) == "--on_missing skip (or with_masks=False)"
    assert flag_spelling("pass on_missing='skip'", {"--quantize"}) == "pass on_missing='skip'"
    assert flag_spelling("num_lesions=0 is too small", {"--num_lesions"}) == "--num_lesions 0 is too small"
    assert flag_spelling("'nv=0.8,mel=0.03'", {"--target_prior"}) == "'nv=0.8,mel=0.03'"


# ---------------------------------------------------------------------------------------------------------------
# Help


def test_hf_skin_help_lists_each_subcommand_on_one_line():
    result = hf_skin("--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: hf-skin COMMAND")
    listed = re.findall(r"^  (\S+)  +\S.*$", result.stdout, flags=re.MULTILINE)
    assert listed == list(COMMANDS) == ["train", "evaluate", "calibrate", "compare", "prepare", "export", "push",
                                        "synthetic"]  # fmt: skip
    assert hf_skin().returncode == 2  # no command: the same list, on stderr


def test_each_command_names_itself_in_its_usage(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exited:
            main([name, "--help"])
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: hf-skin {name} "), name
    # an alias names itself (argparse said `hf-skin`, or `compare.py` for every way of running compare)
    result = hf_skin("--help", command="hf-skin-compare")
    assert result.returncode == 0 and result.stdout.startswith("usage: hf-skin-compare ")


def test_train_help_groups_the_flags_by_what_they_are_for():
    from dataclasses import fields

    from transformers import TrainingArguments

    from hf_skin.cli.train import OTHER_FLAGS
    from hf_skin.training import DataArguments, ModelArguments, SkinTrainingArguments

    result = hf_skin("train", "--help")
    assert result.returncode == 0
    text = result.stdout
    usage = text[: text.index("\n\n")]
    assert usage.splitlines() == [
        "usage: hf-skin train [--model NAME] [--dataset DATA] [--output_dir DIR] [FLAG ...]",
        "       hf-skin train ARGS.json [FLAG ...]",
    ]
    titles = re.findall(r"^(\S[^\n]*):\n", text[len(usage) :], flags=re.MULTILINE)
    assert titles == ["options", *TRAIN_GROUPS, OTHER_FLAGS[0], "examples"]
    sections = dict(zip(titles, re.split(r"^\S[^\n]*:\n", text[len(usage) :], flags=re.MULTILINE)[1:]))

    def flags(section: str) -> list[str]:
        return re.findall(r"^  --(\w+)", sections[section], flags=re.MULTILINE)

    # every flag of hf-skin's own (model, data, SkinTrainingArguments' additions) is in a named group, first
    base = {f.name for f in fields(TrainingArguments)}
    own = [f.name for cls in (ModelArguments, DataArguments, SkinTrainingArguments) for f in fields(cls)]
    own = [name for name in own if name not in base]
    named = [flag for title in TRAIN_GROUPS for flag in flags(title)]
    assert set(own) <= set(named)
    assert not set(own) & set(flags(OTHER_FLAGS[0]))
    # each group lists what the table says (no flag the parser lacks), each flag once, in one spelling
    for title, (_, names) in TRAIN_GROUPS.items():
        assert [f for f in flags(title) if not f.startswith("no_")] == list(names), title
    shown = named + flags(OTHER_FLAGS[0])
    assert len(shown) == len(set(shown)) and "--num-train-epochs" not in text
    assert "hub_token" not in shown and "--hub_token" not in text  # refused, so not offered
    assert "(default: None)" not in text
    # the defaults shown are the chosen model's recipe
    assert re.search(r"--learning_rate LEARNING_RATE\s+The initial learning rate for the optimizer.\s+"
                     r"\(default:\s+0.001\)", text)  # fmt: skip
    vit = hf_skin("train", "--model", "vit", "--help").stdout
    assert "--model vit's recipe" in vit and re.search(r"optimizer.\s+\(default:\s+5e-05\)", vit)


# ---------------------------------------------------------------------------------------------------------------
# Tokens and abbreviations

TOKEN = "hf_" + "abcdefghijklmnopqrstuvwxyz"
TOKEN_SPELLINGS = [
    ["--hub_token", "x"],
    ["--hub-token", "x"],
    ["--hub_tok", "x"],
    ["--hub-tok", "x"],
    ["--HUB_TOKEN=x"],
    ["--hub_token=x"],
    ["--hubtoken", "x"],
    ["--token", "x"],
    ["--token=x"],
    ["--tok", "x"],
    ["--hub_model_id", TOKEN],
]


@pytest.mark.parametrize("spelling", TOKEN_SPELLINGS, ids=lambda a: a[0])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_token_flags_are_refused_in_every_spelling_by_every_command(command, spelling, tmp_path):
    with pytest.raises(CommandLineError, match="token|HF_TOKEN") as err:
        main([command, *spelling])
    assert TOKEN not in str(err.value)  # the error line does not repeat it


def test_tokens_are_refused_in_argument_files(tmp_path, monkeypatch):
    for values in ({"model": "cnn", "hub-token": "x"}, {"push_to_hub_token": "x"}, {"hub_model_id": TOKEN}):
        leaked = tmp_path / "args.json"
        leaked.write_text(json.dumps(values))
        with pytest.raises(CommandLineError, match="holds a token"):
            refuse_tokens([str(leaked)])
    # transformers' HfArgumentParser reads `<program>.args` beside the program unasked: a token there is refused too
    program = tmp_path / "finetune.py"
    program.with_suffix(".args").write_text("--model cnn --hub_token x\n")
    monkeypatch.setattr(sys, "argv", [str(program)])
    with pytest.raises(CommandLineError, match=r"--hub_token \(in .*finetune.args\) is not accepted"):
        refuse_tokens(["--model", "cnn"])


# A flag abbreviated per command: argparse would have expanded each (allow_abbrev=False refuses them).
ABBREVIATIONS = {
    "train": ["--model", "cnn", "--num_train", "1"],
    "evaluate": ["--model", "m", "--bootstrap_res", "0"],
    "calibrate": ["--model", "m", "--output_dir", "o", "--target_pri", "data"],
    "compare": ["r", "--output", "o"],
    "prepare": ["--source", "s", "--output_dir", "o", "--form", "parquet"],
    "export": ["r", "o", "--quant", "int8"],
    "push": ["r", "user/x", "--dry"],
    "synthetic": ["o", "--num", "14"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_flags_are_not_abbreviated(command, capsys, tmp_path, monkeypatch):
    assert set(ABBREVIATIONS) == set(COMMANDS)
    monkeypatch.chdir(tmp_path)  # nothing is written where the tests run, should a flag be taken
    with pytest.raises(SystemExit) as exited:
        main([command, *ABBREVIATIONS[command]])
    assert exited.value.code == 2
    abbreviation = next(a for a in ABBREVIATIONS[command][::-1] if a.startswith("--"))
    assert re.search(rf"^error: unrecognized arguments: .*{abbreviation}\b", capsys.readouterr().err, re.MULTILINE)
