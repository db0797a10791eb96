"""The documentation: the site builds from docs/ with no warning (Sphinx, MyST, Furo: what `make
docs` runs), every page is in its table of contents, and the README stays short."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README_LINES = 250


def test_the_site_builds_with_no_warning(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(ROOT / "docs"), str(tmp_path / "html")],
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    built = {p.stem for p in (tmp_path / "html").glob("*.html")}
    assert pages <= built, pages - built
    index = (tmp_path / "html" / "index.html").read_text()
    assert all(f'href="{page}.html"' in index for page in pages - {"index"}), index


def test_the_readme_is_short_and_links_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_LINES
    for page in (ROOT / "docs").glob("*.md"):
        if page.stem != "index":
            assert f"(docs/{page.name})" in text, page.name
