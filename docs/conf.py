"""Sphinx configuration of the documentation site: Markdown pages (MyST) with the Furo theme.

    make docs        # docs/_build/html/index.html; the test suite builds it with -W

Why Sphinx, MyST and Furo: in 2026 Sphinx 9 with MyST-Parser and Furo is maintained and takes
plain Markdown pages; MkDocs 1.x has had no release since 2024 and Material for MkDocs is on
security-only support, its successor Zensical at 0.1.
"""

project = "How much does pretraining help a Vision Transformer?"
author = "The project's authors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "results"]  # results/: generated tables, included by the pages
myst_heading_anchors = 4  # [text](page.md#a-heading) links resolve
myst_enable_extensions = ["deflist"]
suppress_warnings = ["myst.header"]  # a page may start at a second-level heading's depth
html_theme = "furo"
html_title = "ViT pretraining study"
html_static_path: list[str] = []
