"""The Markdown of a board's hand-written ``NOTES.md`` as HTML, for ``index.html``.

The notes are the board's reading and caveats; the page must carry them as the README
does. Only the Markdown such notes use is understood — headings, paragraphs, nested
``-``/``*``/``1.`` lists, fenced code blocks, ``**bold**``, ``*italic*``, ``` `code` ```
and ``[links](…)`` — and everything else is shown as escaped text, never as raw HTML.
"""

from __future__ import annotations

import html
import re

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+(.*)$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def inline(text: str) -> str:
    """Escaped text with code spans, bold, italics and links as HTML.

    Code spans are set aside first, so that bold or a link may contain one.

    Args:
        text: One paragraph's or item's Markdown.
    """
    codes: list[str] = []

    def keep(match: re.Match[str]) -> str:
        codes.append(f"<code>{html.escape(match.group(1))}</code>")
        return f"\0{len(codes) - 1}\0"

    s = html.escape(re.sub(r"`([^`]*)`", keep, text), quote=False)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", s)
    s = re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)",
               lambda m: f'<a href="{html.escape(m.group(2))}">{m.group(1)}</a>', s)
    return re.sub(r"\0(\d+)\0", lambda m: codes[int(m.group(1))], s)


def _list_html(items: list[tuple[int, bool, str]]) -> str:
    """Nested lists from (indent, ordered, text) items, in order."""
    out: list[str] = []
    stack: list[tuple[int, str]] = []  # (indent, tag) of the open lists
    for indent, ordered, text in items:
        tag = "ol" if ordered else "ul"
        while stack and indent < stack[-1][0]:
            out.append(f"</li></{stack.pop()[1]}>")
        if stack and indent == stack[-1][0]:
            out.append("</li>")
        else:
            out.append(f"<{tag}>")
            stack.append((indent, tag))
        out.append(f"<li>{inline(text)}")
    while stack:
        out.append(f"</li></{stack.pop()[1]}>")
    return "".join(out)


def markdown_html(text: str) -> str:
    """HTML of Markdown notes (module docstring for what is understood).

    Args:
        text: The notes.
    """
    blocks: list[str] = []
    para: list[str] = []
    items: list[tuple[int, bool, str]] = []
    lines = text.splitlines()

    def flush() -> None:
        if para:
            blocks.append(f"<p>{inline(' '.join(s.strip() for s in para))}</p>")
            para.clear()
        if items:
            blocks.append(_list_html(items))
            items.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            flush()
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith(fence.group(1)):
                end += 1
            code = "\n".join(lines[i + 1:end])
            blocks.append(f"<pre><code>{html.escape(code)}</code></pre>")
            i = end + 1
            continue
        heading, item = _HEADING.match(line), _ITEM.match(line)
        if not line.strip():
            flush()
        elif heading:
            flush()
            level = len(heading.group(1))  # as in the README, where the notes are inlined
            blocks.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif item:  # a list may interrupt a paragraph
            if para:
                flush()
            indent = len(item.group(1).expandtabs(4))
            items.append((indent, bool(re.match(r"\s*\d", line)), item.group(2)))
        elif items:  # a continuation line of the last item
            indent, ordered, last = items[-1]
            items[-1] = (indent, ordered, f"{last} {line.strip()}")
        else:
            para.append(line)
        i += 1
    flush()
    return "\n".join(blocks)
