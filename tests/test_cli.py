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

    commands = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name.startswith("hf-skin")}
    assert commands["hf-skin-finetune"] == "hf_skin.cli:finetune"
    assert {"hf-skin-evaluate", "hf-skin-compare", "hf-skin-push", "hf-skin-prepare-dataset"} <= set(commands)


def test_synthetic_module_still_writes_a_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_skin.synthetic", str(tmp_path / "s"), "--num_lesions", "14", "--no_masks"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Wrote" in result.stdout and (tmp_path / "s" / "HAM10000_metadata.csv").is_file()
