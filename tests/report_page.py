"""Reading a rendered report (db.report_html) back in tests: texts by element id, table cells,
the reject cards and their pictures, and anything that would load from outside the file."""

from __future__ import annotations

from html.parser import HTMLParser


class Page(HTMLParser):
    """Texts by element id, the reject cards, the images and anything that would load from outside."""

    def __init__(self, text: str):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.open: list[tuple[str, str | None]] = []
        self.cards: list[int] = []
        self.images: list[dict] = []
        self.external: list[str] = []
        self.rows: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.open.append((tag, a.get("id")))
        if a.get("id"):
            self.ids[a["id"]] = ""
        if "data-inspection" in a:
            self.cards.append(int(a["data-inspection"]))
        if tag == "img":
            self.images.append(a | {"card": self.cards[-1] if self.cards else None})
        for k in ("src", "href"):
            if a.get(k) and not a[k].startswith("data:"):
                self.external.append(a[k])
        if tag == "table":
            self._table = a.get("id")
            self.rows[self._table] = []
        elif tag == "tr" and self._table:
            self.rows[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table:
            self.rows[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "table":
            self._table = None
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for _, i in self.open:
            if i:
                self.ids[i] += data
        if self._cell is not None:
            self._cell.append(data)
