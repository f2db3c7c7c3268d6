"""The architecture as the README's Layout states it: the import-linter contracts in pyproject.toml (the science
never imports the command line, training, dataset loading or the app), and functions a reader can hold on one screen."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 60  # code lines of one function, its docstring not counted


def test_import_contracts_hold():
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _long_functions(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                body = node.body
                docstring = (body[0].end_lineno - body[0].lineno + 1 if isinstance(body[0], ast.Expr)
                             and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str) else 0)
                lines = node.end_lineno - node.lineno + 1 - docstring
                if lines > MAX_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_is_longer_than_a_screen():
    assert _long_functions(ROOT / "vitlens") == []


def test_the_length_check_finds_a_long_function(tmp_path):
    (tmp_path / "long.py").write_text("def f():\n    '''doc'''\n" + "    x = 1\n" * MAX_LINES)
    (tmp_path / "short.py").write_text("def g():\n" + "    x = 1\n" * (MAX_LINES - 1))
    assert [s.split()[1] for s in _long_functions(tmp_path)] == ["f"]
