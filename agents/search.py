"""Text search in traces: every word typed must appear in the trace's input,
output or error (whole words, any case, punctuation ignored).

On PostgreSQL this is full-text search: ``to_tsvector('simple', …) @@
plainto_tsquery('simple', …)`` over the same expression a GIN index is built on
(migration 0010, ``trace_search_fts``), so a search reads the index's entries
for its words instead of the window's traces. The ``simple`` configuration
keeps every word as written (no stemming, no stop words), whatever the
language. Only the first SEARCHED_CHARS characters of a trace are indexed,
which keeps each entry under PostgreSQL's 1 MB limit for a tsvector. SQLite,
the embedded first-run default, looks for each word with LIKE (anywhere in the
text, case-insensitive for ASCII letters)."""

import re

from django.db.models import BooleanField, Func, Value

SEARCHED_CHARS = 100_000
# The indexed expression, as migration 0010 creates it.
SEARCH_VECTOR_SQL = (
    f"to_tsvector('simple'::regconfig, left(input || ' ' || output || ' ' || error, {SEARCHED_CHARS}))"
)


def search_words(text: str) -> list[str]:
    """The words of a search, as both databases read them."""
    return re.findall(r"\w+", text)


def like_escape(term: str) -> str:
    """``term`` with LIKE's wildcards and escape character taken literally."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class TextMatches(Func):
    """A filter on traces (``filter(TextMatches(text))``): every word of ``text``
    is in the trace's input, output or error."""

    output_field = BooleanField()

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(Value(text))

    def _columns(self, compiler) -> dict[str, str]:
        table = compiler.quote_name(compiler.query.get_initial_alias())
        return {c: f'{table}."{c}"' for c in ("input", "output", "error")}

    def as_postgresql(self, compiler, connection, **extra):
        columns = self._columns(compiler)
        vector = re.sub(r"\b(input|output|error)\b", lambda m: columns[m.group(1)], SEARCH_VECTOR_SQL)
        return f"{vector} @@ plainto_tsquery('simple'::regconfig, %s)", [self.text]

    def as_sql(self, compiler, connection, **extra):
        # SQLite: each word anywhere in the joined text.
        joined = " || char(10) || ".join(self._columns(compiler).values())
        words = search_words(self.text) or [""]
        sql = " AND ".join(f"({joined}) LIKE %s ESCAPE '\\'" for _ in words)
        return f"({sql})", [f"%{like_escape(w)}%" for w in words]
