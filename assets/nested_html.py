"""Text of HTML nested deeper than the tree parser goes: libxml2 (under unstructured's partition_html) stops at
256 levels and returns nothing for text below them, which read as "no text could be extracted". The stdlib
tokenizer here is flat (no tree, no recursion), so it reads any depth."""

from __future__ import annotations

from html.parser import HTMLParser

TREE_PARSER_MAX_DEPTH = 256  # libxml2's default nesting limit (XML_PARSE_HUGE lifts it; lxml's HTML parser does not)
_SKIPPED = {"script", "style", "template", "noscript"}
_BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "table",
           "ul", "ol", "pre", "blockquote", "td", "th"}
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _FlatText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.depth = self.max_depth = self.skipping = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in _VOID:
            if tag == "br":
                self.parts.append("\n")
            return
        self.depth += 1
        self.max_depth = max(self.max_depth, self.depth)
        self.skipping += tag in _SKIPPED
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_endtag(self, tag):
        if tag in _VOID:
            return
        self.depth = max(self.depth - 1, 0)
        self.skipping = max(self.skipping - (tag in _SKIPPED), 0)
        if tag in _BLOCKS:
            self.parts.append("\n\n")

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)


def flat_html_text(html: str) -> tuple[str, int]:
    """(paragraphs of visible text separated by blank lines, deepest element nesting) of an HTML document."""
    parser = _FlatText()
    parser.feed(html)
    parser.close()
    paragraphs = (" ".join(p.split()) for p in "".join(parser.parts).split("\n\n"))
    return "\n\n".join(p for p in paragraphs if p), parser.max_depth
