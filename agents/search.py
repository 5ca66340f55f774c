"""Text search in traces: their input, output and error, case-insensitive.

On PostgreSQL the search is ``… ILIKE '%term%'`` over the same expression a
trigram (pg_trgm) GIN index is built on (migration 0009, ``trace_search_trgm``),
so it reads the index instead of every trace of the window; a term needs
MIN_TERM characters for the index to apply. SQLite, the embedded first-run
default, scans with LIKE (case-insensitive for ASCII letters)."""

from django.db.models import BooleanField, F, Func, TextField, Value

MIN_TERM = 3


class SearchText(Func):
    """A trace's input, output and error joined by newlines (a term typed in a
    search box holds no newline, so it never matches across two of them)."""

    arg_joiner = " || E'\\n' || "
    template = "(%(expressions)s)"
    output_field = TextField()

    def __init__(self, prefix: str = "") -> None:
        super().__init__(F(f"{prefix}input"), F(f"{prefix}output"), F(f"{prefix}error"))

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(compiler, connection, arg_joiner=" || char(10) || ", **extra)


def like_escape(term: str) -> str:
    """``term`` with LIKE's wildcards and escape character taken literally."""
    return term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class TextContains(Func):
    """True where ``expression`` contains ``term``, ignoring case."""

    output_field = BooleanField()
    template = "%(expressions)s"
    arg_joiner = " ILIKE "

    def __init__(self, expression, term: str) -> None:
        super().__init__(expression, Value(f"%{like_escape(term)}%"))

    def as_sqlite(self, compiler, connection, **extra):
        return self.as_sql(
            compiler, connection, arg_joiner=" LIKE ", template="%(expressions)s ESCAPE '\\'", **extra
        )
