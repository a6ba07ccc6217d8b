"""The README's two set-up commands, and CI running the second one verbatim."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    install_and_run, install_and_test = setup_commands()
    assert "raytraj quickstart" in install_and_run and "pip install" in install_and_run
    assert install_and_test.endswith("pytest") and "[test]" in install_and_test


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert setup_commands()[1] in ci


def test_docs_point_only_at_files_inside_the_repository():
    """A reader of a clone has nothing outside it: no links or paths that climb out of the repo."""
    docs = [ROOT / "README.md", *(ROOT / "clusters").glob("*.md"), *(ROOT / "benchmarks" / "results").glob("*.md")]
    for doc in docs:
        text = doc.read_text()
        targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r"`([^`\s]*/[^`\s]*)`", text)
        for target in targets:
            if "://" in target or target.startswith(("/", "~", "$")):
                continue
            resolved = (doc.parent / target.split("#")[0]).resolve()
            assert resolved.is_relative_to(ROOT), f"{doc.relative_to(ROOT)} points outside the repository: {target}"
