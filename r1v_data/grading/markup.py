"""Markup that must never supply an answer's digits: the `<h2>` of an HTML answer, the `3.` of a
Markdown list, the `7` of a link to `plan/7.png`.

`strip_html` removes HTML tags (only real tag names: `x<y and y>z` is maths) and entities;
`strip_markup` also removes Markdown headings, list markers, link targets, URLs and footnote
marks. Every pattern is bounded, so both are linear in the length of the text.
"""

from __future__ import annotations

import html
import re

__all__ = ["strip_html", "strip_markup"]

# Only these names: "x<y and y>z" is maths, not a tag.
_HTML_NAME = re.compile(
    r"a|abbr|b|big|blockquote|body|br|center|code|del|div|em|font|h[1-6]|head|hr|html|i|img|ins|li|"
    r"mark|ol|p|pre|s|section|small|span|strong|sub|sup|table|tbody|td|th|thead|title|tr|tt|u|ul",
    re.IGNORECASE,
)
_SUP = re.compile(r"<sup>\s*", re.IGNORECASE)
_SUB = re.compile(r"<sub>\s*", re.IGNORECASE)
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]{0,9})\b[^<>]{0,300}+>")
_ENTITY = re.compile(r"&(?:#\d{1,7}|#x[0-9a-fA-F]{1,6}|[A-Za-z]{2,10});")
_HEADING = re.compile(r"^[ \t]*#{1,6}[ \t][^\n]*$", re.MULTILINE)
_LIST_MARKER = re.compile(r"^([ \t]*)(?:\d{1,3}[.)]|[-*+])[ \t]+(?=\S)", re.MULTILINE)
_LINK_TARGET = re.compile(r"\]\([^()\[\]\s]{0,300}+\)")  # the "(url)" of "[text](url)"
_URL = re.compile(r"\bhttps?://\S+")
_FOOTNOTE = re.compile(r"\[\^\d+\]")


def strip_html(text: str) -> str:
    """The text without HTML tags (`<h2>`, `<b>`) and entities (`&#8217;`); `<sup>2</sup>`
    becomes `^2` and `<sub>1</sub>` `_1`, so they read as exponent and index."""
    if "<" in text:
        text = _TAG.sub(_drop_tag, _SUB.sub("_", _SUP.sub("^", text)))
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
    return text


def _drop_tag(tag: re.Match[str]) -> str:
    return " " if _HTML_NAME.fullmatch(tag.group(1)) else tag.group()


def strip_markup(text: str) -> str:
    """`strip_html`, and the Markdown whose digits are not content: headings (`## Step 2`), list
    markers (`3. `), link targets, URLs and footnote marks."""
    text = strip_html(text)
    if "#" in text:
        text = _HEADING.sub("", text)
    if "](" in text:
        text = _LINK_TARGET.sub("]", text)
    if "[^" in text:
        text = _FOOTNOTE.sub("", text)
    if "://" in text:
        text = _URL.sub(" ", text)
    return _LIST_MARKER.sub(r"\1", text)
