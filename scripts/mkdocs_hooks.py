"""mkdocs hooks for the docs site (named in mkdocs.yml).

The package's docstrings use Sphinx roles (``:class:`~hf_vit_rollout.Explanation```), which
Markdown shows literally; on the API pages they become plain code with the short name
(``Explanation``), as Sphinx would print them.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):<code>(~?)([^<]+)</code>")


def _short(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    """Sphinx roles in rendered docstrings → inline code."""
    return _ROLE.sub(_short, html)
