"""Validation of the self-contained HTML report pages."""

from __future__ import annotations

from html.parser import HTMLParser

__all__ = ["validate_report_html"]

_VOID = {"meta", "br", "hr", "link", "img", "input", "col", "wbr"}


class _Collector(HTMLParser):
    """Strict-enough HTML check: every non-void element closed in order, tables rectangular."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.tags, self.imgs, self.errors, self.decl = [], [], [], [], []
        self.row_widths: list[list[int]] = []
        self.text: list[str] = []

    def handle_decl(self, decl):
        self.decl.append(decl)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag == "table":
            self.row_widths.append([])
        elif tag == "tr" and self.row_widths:
            self.row_widths[-1].append(0)
        elif tag in ("td", "th") and self.row_widths and self.row_widths[-1]:
            self.row_widths[-1][-1] += 1
        if tag not in _VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def validate_report_html(path) -> _Collector:
    """Validate a self-contained report page: structure, tables, and every embedded PNG decodes."""
    import base64
    import io

    from PIL import Image

    page = path.read_text(encoding="utf-8")
    parser = _Collector()
    parser.feed(page)
    parser.close()
    assert parser.decl and parser.decl[0].lower() == "doctype html"
    assert not parser.errors and not parser.stack, (parser.errors, parser.stack)
    assert parser.tags[:3] == ["html", "head", "meta"] and {"title", "body", "h1", "table"} <= set(parser.tags)
    for widths in parser.row_widths:  # header and body rows of each table have one width
        assert widths and len(set(widths)) == 1, widths
    assert 'src="http' not in page and "<script" not in page  # self-contained, nothing to fetch
    for img in parser.imgs:
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix) and img.get("alt")
        with Image.open(io.BytesIO(base64.b64decode(img["src"][len(prefix) :], validate=True))) as im:
            im.verify()  # a truncated or corrupt PNG raises
            assert im.format == "PNG" and min(im.size) > 50
    return parser
