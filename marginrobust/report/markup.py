"""The Markdown of a board's hand-written ``NOTES.md`` as HTML, for ``index.html``.

The notes are the board's reading and caveats; the page must carry them as the README
does. markdown-it-py renders them (CommonMark, plus GitHub's pipe tables, which notes use
for small figures); raw HTML in the notes is shown as escaped text, never passed through.
"""

from __future__ import annotations

from markdown_it import MarkdownIt

# html=False: a tag written in the notes is text on the page, not markup.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown_html(text: str) -> str:
    """HTML of Markdown notes (CommonMark with pipe tables; raw HTML escaped).

    Args:
        text: The notes.
    """
    return _MARKDOWN.render(text)
