"""The command lines (hf_skin.cli): scripts as thin shims, the library neither prints nor configures logging."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_each_script_runs_from_its_folder(script):
    # scripts/ is sys.path[0] here, scripts/evaluate.py among them: every script still runs.
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage" in result.stdout.lower()


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
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                assert name not in ("print", "basicConfig"), f"{path.name}:{node.lineno} calls {name}"


def test_console_commands_are_installed():
    from importlib.metadata import entry_points

    from hf_skin.cli import ALIASES, COMMANDS

    commands = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("hf-skin")}
    assert commands["hf-skin"] == "hf_skin.cli:main"
    # the one-command names of before are aliases of a subcommand each
    assert {name: commands[name] for name in ALIASES} == dict.fromkeys(ALIASES, "hf_skin.cli:main")
    assert set(ALIASES.values()) <= set(COMMANDS)


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


BIN = Path(sys.executable).parent


def hf_skin(*args, command: str = "hf-skin", env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    run_env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_TOKEN": "", **(env or {})}
    run_env.pop("HF_TOKEN")  # no token: a dry run must not need one
    return subprocess.run(
        [str(BIN / command), *map(str, args)], capture_output=True, text=True, timeout=600, env=run_env
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


def test_every_console_command_exits_zero_on_success(cli_run):
    run, data = cli_run / "run", cli_run / "data"
    assert hf_skin("--help").returncode == 0
    # Without --dataset, a run is evaluated on its own data (it went to the Hub before: a traceback offline).
    evaluated = hf_skin("--model", run, "--bootstrap_resamples", 0, command="hf-skin-evaluate")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert (run / "evaluation" / f"{data.name}-test" / "metrics.json").is_file()
    for args, command in (
        (["calibrate", "--model", run, "--output_dir", cli_run / "recalibrated"], "hf-skin"),
        ([run, "--output_dir", cli_run / "compare", "--bootstrap_resamples", 0], "hf-skin-compare"),
        (["prepare", "--source", data, "--output_dir", cli_run / "prepared"], "hf-skin"),
        (["export", run, cli_run / "export"], "hf-skin"),
        (["push", run, "someone/tiny", "--dry_run"], "hf-skin"),
    ):
        result = hf_skin(*args, command=command)
        assert result.returncode == 0, (args, result.stderr[-3000:])
    assert (cli_run / "export" / "model.onnx").is_file()


def test_a_dry_run_needs_neither_token_nor_hub_and_shows_the_card(cli_run):
    readme = cli_run / "run" / "README.md"
    before = readme.read_bytes() if readme.exists() else None
    result = hf_skin("push", cli_run / "run", "someone/tiny", "--dry_run")
    assert (readme.read_bytes() if readme.exists() else None) == before  # the run folder is left as it is
    assert result.returncode == 0, result.stderr[-3000:]
    assert "unknown offline" in result.stdout and "The model card it would publish (README.md)" in result.stdout
    assert "---\n" in result.stdout and "## " in result.stdout  # the card itself: metadata and sections


def test_a_failure_is_one_error_line(cli_run, tmp_path):
    assert_one_error_line(hf_skin("evaluate", "--model", tmp_path / "nothing-here"), "nothing-here")
    assert_one_error_line(hf_skin("train", "--dataset", tmp_path / "empty", "--output_dir", tmp_path / "o"), "empty")
    assert_one_error_line(hf_skin("nonsense"), "no command 'nonsense'")
    # A Hub dataset offline: one line, not a 40-line traceback.
    assert_one_error_line(
        hf_skin("evaluate", "--model", cli_run / "run", "--dataset", "nobody/no-such-data", "--split", "all"),
        "nobody/no-such-data",
    )


def test_library_advice_reads_as_flags():
    from hf_skin.cli import flag_spelling

    assert flag_spelling("pass on_missing='skip' to drop them") == "pass --on_missing skip to drop them"
    assert flag_spelling("or with_masks=False; resplit=True") == "or --no_with_masks; --resplit"


@pytest.mark.parametrize(
    "args",
    [
        ["--hub_token", "x"],
        ["--hub-token", "x"],
        ["--hub_tok", "x"],
        ["--HUB_TOKEN=x"],
        ["--hubtoken", "x"],
        ["--token", "x"],
        ["--tok", "x"],
        ["--hub_model_id", "hf_" + "abcdefghijklmnopqrstuvwxyz"],
    ],
    ids=lambda a: a[0],
)
def test_token_flags_are_refused_in_every_spelling(args, tmp_path):
    from hf_skin.cli import CommandLineError, refuse_tokens

    with pytest.raises(CommandLineError, match="token|HF_TOKEN"):
        refuse_tokens(args)
    leaked = tmp_path / "args.json"
    leaked.write_text('{"model": "cnn", "hub-token": "x"}')
    with pytest.raises(CommandLineError, match="holds a token"):
        refuse_tokens([str(leaked)])


def test_flags_are_not_abbreviated(tmp_path):
    from hf_skin.training import parse_args

    # Not expanded to --num_train_epochs (argparse's abbreviations): left over, and named.
    with pytest.raises(ValueError, match="--num_train"):
        parse_args(["--model", "cnn", "--num_train", "1", "--output_dir", str(tmp_path)])
