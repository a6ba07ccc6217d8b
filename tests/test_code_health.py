"""One home per concept: the run folder's file names live in raytraj/runfolder.py only."""

import ast
import re
from pathlib import Path

from raytraj import runfolder

PACKAGE = Path(runfolder.__file__).parent
# "state" is a run folder's name too, but also an ordinary word; the files are what code must not spell out.
NAMES = [runfolder.CONFIG, runfolder.METRICS, runfolder.PERM, *(runfolder.model_file(m) for m in runfolder.MODELS)]
PATTERN = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(n) for n in NAMES) + r")(?![\w.-])")


def code_strings(tree: ast.AST):
    """String constants of the code (f-string parts included), not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_run_folder_file_names_appear_only_in_runfolder_py():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == Path(runfolder.__file__):
            continue
        for line, text in code_strings(ast.parse(path.read_text(), str(path))):
            if PATTERN.search(text):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert not found, "use raytraj.runfolder's names instead of:\n" + "\n".join(found)


def test_the_check_finds_a_planted_literal():
    tree = ast.parse('"""metrics.json in a docstring is fine"""\nx = f"{out}/metrics.json"\ny = "best.safetensors"\n')
    assert sorted(t for _, t in code_strings(tree) if PATTERN.search(t)) == ["/metrics.json", "best.safetensors"]
