"""Nothing in the repository links outside it: every relative link or path in
Markdown resolves to a file or folder of the repository (not ../shared/…), and
the README and docs/ link to no web page (the repository is the documentation)."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")  # [text](target "title")
BARE = re.compile(r"(?<![\w/.])\.\./[^\s)`'\"]+")  # ../somewhere written outside a link


def anchors(path: Path) -> set[str]:
    """The anchors a Markdown renderer gives the file's headings (GitHub's rule)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}


def markdown_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / f for f in out if (ROOT / f).exists()]


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository(path):
    text = path.read_text()
    problems = []
    for target in LINK.findall(text) + BARE.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # a URL
            if path.parent == ROOT and path.name == "README.md" or ROOT / "docs" in path.parents:
                problems.append(f"{target}: the README and docs/ link to nothing outside the repository")
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if anchor and resolved.suffix == ".md" and resolved.exists() and anchor not in anchors(resolved):
            problems.append(f"{target}: no heading #{anchor} in {resolved.name}")
        if not file_part:
            continue
        if ROOT != resolved and ROOT not in resolved.parents:
            problems.append(f"{target}: leaves the repository")
        elif not resolved.exists():
            problems.append(f"{target}: no such file in the repository")
        elif "shared" in resolved.relative_to(ROOT).parts[:1]:
            problems.append(f"{target}: points at shared/")
    assert problems == [], f"{path.relative_to(ROOT)}"


def test_the_check_catches_a_link_out(tmp_path):
    assert LINK.findall("see [`../shared/CONTRACT.md`](../shared/CONTRACT.md)") == ["../shared/CONTRACT.md"]
    assert BARE.findall("the contract in ../shared/CONTRACT.md says") == ["../shared/CONTRACT.md"]
