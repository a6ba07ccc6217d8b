"""One home per concept: every store and run-folder file name is spelled in its own module only."""

import ast
import re
from pathlib import Path

from raytraj import runfolder
from raytraj.train import loop
from raytraj.trajectory import store

PACKAGE = Path(runfolder.__file__).parent
# "state" and "steps" are folder names too, but also ordinary words; the files are what code must not spell out.
HOMES = {
    Path(runfolder.__file__): [runfolder.CONFIG, runfolder.METRICS, runfolder.PERM, runfolder.PROGRESS,
                               *(runfolder.model_file(m) for m in runfolder.MODELS)],
    Path(store.__file__): [store.MANIFEST],
    Path(loop.__file__): [loop.TRAIN_STATE],
}
NAMES = [n for names in HOMES.values() for n in names]


def pattern(names):
    return re.compile(r"(?<![\w.-])(" + "|".join(re.escape(n) for n in names) + r")(?![\w.-])")


PATTERN = pattern(NAMES)


def code_strings(tree: ast.AST):
    """String constants of the code (f-string parts included), not docstrings."""
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            yield node.lineno, node.value


def test_store_and_run_folder_file_names_appear_only_in_their_home_module():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        foreign = pattern([n for home, names in HOMES.items() if home != path for n in names])
        for line, text in code_strings(ast.parse(path.read_text(), str(path))):
            if foreign.search(text):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert not found, "use the names of raytraj.runfolder, raytraj.trajectory.store or raytraj.train.loop:\n" + \
        "\n".join(found)


def test_the_check_finds_a_planted_literal():
    tree = ast.parse('"""metrics.json in a docstring is fine"""\nx = f"{out}/metrics.json"\ny = "best.safetensors"\n')
    assert sorted(t for _, t in code_strings(tree) if PATTERN.search(t)) == ["/metrics.json", "best.safetensors"]


def test_the_engine_talks_to_backends_through_their_protocol_only():
    """No probes for undeclared backend methods: both backends implement transfer/backend.py in full."""
    from raytraj.distributed.backend import RayBackend
    from raytraj.transfer import backend, engine, run
    from raytraj.transfer.local import LocalBackend

    for module in (engine, run):
        tree = ast.parse(Path(module.__file__).read_text())
        probes = [n.lineno for n in ast.walk(tree)
                  if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "hasattr")
                  and isinstance(n.args[0], ast.Name) and n.args[0].id in ("backend", "runner", "matcher")]
        assert not probes, f"{module.__name__} probes the backend at lines {probes}"
    declared = {name for name, value in vars(backend.Backend).items() if callable(value) and not name.startswith("_")}
    assert declared == {"matcher", "evaluate", "materialize", "utilisation", "report", "close"}
    for cls in (LocalBackend, RayBackend):
        assert declared <= set(dir(cls)), (cls.__name__, declared - set(dir(cls)))
