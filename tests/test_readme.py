"""README's code stays true: the Usage snippet runs, and CI runs README's test command."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def test_usage_snippet_runs():
    readme = (ROOT / "README.md").read_text()
    usage = readme.split("## Usage", 1)[1]
    code = re.search(r"```python\n(.*?)```", usage, re.S).group(1)
    scope = {}
    exec(compile(code, "README.md (Usage)", "exec"), scope)
    assert scope["out"].shape == (8, 100, 32) and isinstance(scope["h_n"], torch.Tensor)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    marker = readme.index("<!-- test-command")
    command = re.search(r"^pip .*$", readme[marker:], re.M).group(0)
    assert "pytest" in command
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
