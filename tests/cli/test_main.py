"""The `resdet` command: its list of subcommands, dispatch, quick start-up, and tools/ as thin
wrappers of the same code."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, run_tool

from detection.cli.main import COMMANDS, help_text, main

RESDET = Path(sys.executable).parent / "resdet"  # the venv's console script


def test_help_lists_every_command_with_its_docstring_line(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, command in COMMANDS.items():
        module = importlib.import_module(f"detection.cli.{command.module}")
        assert module.__doc__.splitlines()[0] == command.summary, name
        assert callable(module.main)
        assert f"  {name} " in out and command.summary in out
    assert max(map(len, help_text().splitlines())) <= 100


def test_help_imports_no_torch():
    code = (
        "import sys; from detection.cli.main import main; main(['--help']); "
        "sys.exit(3 if 'torch' in sys.modules else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "train" in r.stdout


def test_unknown_command_suggests_and_no_command_is_usage(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "Did you mean 'train'?" in err
    assert main([]) == 2
    assert "usage: resdet COMMAND" in capsys.readouterr().err


def test_usage_and_errors_name_the_subcommand(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["resdet"])
    with pytest.raises(SystemExit) as e:
        main(["split", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: resdet split ") and "--val-fraction" in out
    with pytest.raises(SystemExit) as e:
        main(["help", "split"])
    assert e.value.code == 0 and capsys.readouterr().out == out
    with pytest.raises(SystemExit) as e:
        main(["split"])
    assert e.value.code == 2
    assert "resdet split: error: the following arguments are required" in capsys.readouterr().err


@pytest.mark.skipif(not RESDET.exists(), reason="resdet is not installed in this environment")
def test_console_script_runs_a_subcommand(tmp_path):
    r = subprocess.run([RESDET, "split", "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: resdet split ") and "--val-fraction" in r.stdout


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement of a Python file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


def test_tools_are_thin_wrappers_of_the_cli_modules():
    wrappers = sorted(ROOT.glob("tools/*.py"))
    assert not (ROOT / "tools/__init__.py").exists()  # not a package: nothing can import it
    used = set()
    for path in wrappers:
        imports = _imports(path)
        cli = [m for m, names in imports if m.startswith("detection.cli.") and names == ["main"]]
        assert len(cli) == 1, f"{path.name} should call one detection.cli module's main"
        assert {m for m, _ in imports} <= {"sys", cli[0]}, f"{path.name} does more than wrap"
        assert len(path.read_text().splitlines()) <= 10
        used.add(cli[0].rsplit(".", 1)[1])
    assert used == {c.module for c in COMMANDS.values()} - {"configs", "weights"}  # new ones


def test_nothing_imports_tools():
    for folder in ("detection", "backbones", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for module, _ in _imports(path):
                assert module.split(".")[0] != "tools", f"{path} imports {module}"
            # scripts that tests run in subprocesses are strings: look at their lines too
            bad = [
                line
                for line in text.splitlines()
                if line.startswith(("from tools", "import tools"))
            ]
            assert not bad, f"{path}: {bad}"


def test_a_wrapper_runs_the_command_from_a_checkout():
    r = run_tool(["tools/split_dataset.py", "--help"])
    assert "Split a COCO json" in r.stdout and "--every K" in r.stdout
