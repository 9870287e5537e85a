"""The README's links: mkdocs checks the links inside docs/ (`make docs`), not the README's."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _anchors(path):
    """The heading anchors mkdocs makes for a Markdown file (its default slugs)."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)  # no headings inside code blocks
    heads = re.findall(r"^#+ (.+)$", text, flags=re.M)
    return {re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", h.replace("`", "")).strip().lower()) for h in heads}


def _readme_links():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return sorted(set(re.findall(r"\]\(([^)\s]+)\)", f.read())))


@pytest.mark.parametrize("link", _readme_links())
def test_readme_link_resolves(link):
    if re.match(r"[a-z]+://", link):
        pytest.skip("external link")
    path, _, anchor = link.partition("#")
    target = os.path.join(ROOT, path)
    assert os.path.isfile(target), f"README.md links to {path}, which does not exist"
    if anchor:
        assert anchor in _anchors(target), f"README.md links to #{anchor}, not a heading of {path}"


def test_readme_stays_short():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= 150, "README.md is the front page: details go to docs/"
