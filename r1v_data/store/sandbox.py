"""Running user SQL where it can do no harm: `--where` expressions, recipe filters and `r1v-data sql`.

An expression (`--where`) is evaluated by a DuckDB connection that sees only in-memory Arrow
tables; statement separators and comments are refused up front, so it cannot close the query it
is placed in. A query (`r1v-data sql`) is one SELECT over views of the store's parts.

Either way the connection is locked down before the user's text runs: no file is readable but the
store's own parts (no other file, no catalog, no network), nothing is writable (only SELECT runs:
no COPY, ATTACH, INSTALL, LOAD, SET or PRAGMA), extensions cannot load, the configuration is
locked, memory and threads are capped, and a statement that runs past its time limit is
interrupted.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import duckdb
import pyarrow as pa

from r1v_data.errors import QueryError, first_line

_FORBIDDEN = (";", "--", "/*")
EXPRESSION_TIMEOUT_S = 60.0
MEMORY_LIMIT = "2GB"


def sql_str(value: object) -> str:
    """`value` as the body of a SQL string literal."""
    return str(value).replace("'", "''")


def connect(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """A connection that sees only these tables: no files, no network, no extensions."""
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    lock_down(con, [])
    return con


def lock_down(
    con: duckdb.DuckDBPyConnection, readable: Sequence[str], memory_limit: str = MEMORY_LIMIT
) -> None:
    """From now on `con` reads only the files in `readable` and changes no setting."""
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute(f"SET memory_limit = '{sql_str(memory_limit)}'")
    con.execute("SET threads = 2")
    if readable:
        listed = ", ".join(f"'{sql_str(p)}'" for p in readable)
        con.execute(f"SET allowed_paths = [{listed}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def check_statement(sql: str) -> None:
    """Refuse anything but one SELECT (DuckDB's own parser decides what the text is)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {first_line(exc)}") from None
    if len(statements) != 1:
        raise QueryError(f"give one SELECT statement, not {len(statements)}")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise QueryError(f"only SELECT queries run here (the store is read-only), not {kind.name}")


def fetch_limited(
    con: duckdb.DuckDBPyConnection, sql: str, limit: int, timeout_s: float
) -> tuple[list[str], list[tuple[object, ...]], bool]:
    """At most `limit` rows of `sql`, and whether the query had more."""
    with deadline(con, timeout_s, "the query", "narrow it or raise --timeout"):
        try:
            rel = con.sql(sql)
            if rel is None:
                raise QueryError("the query returned no rows (only SELECT queries are supported)")
            rows = rel.limit(limit + 1).fetchall()
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise QueryError(f"query failed: {first_line(exc)}") from None
    return rel.columns, rows[:limit], len(rows) > limit


@contextmanager
def deadline(con: duckdb.DuckDBPyConnection, seconds: float, what: str, hint: str) -> Iterator[None]:
    """Interrupt what `con` runs after `seconds`; the interruption becomes a one-line QueryError."""
    timer = threading.Timer(seconds, con.interrupt)
    timer.start()
    try:
        yield
    except duckdb.InterruptException:
        raise QueryError(f"{what} ran past its time limit of {seconds:g} s; {hint}") from None
    finally:
        timer.cancel()


def check_expression(where: str, what: str) -> None:
    """Refuse what could end or comment out the surrounding query."""
    for token in _FORBIDDEN:
        if token in where:
            raise QueryError(f"--where {where!r}: {token!r} is not allowed in an expression over {what}")


def matching(table: pa.Table, where: str, what: str, key: str = "sample_id") -> list[str]:
    """The `key` values of the rows of `table` for which `where` is true, in table order."""
    return [r[0] for r in _run(table, f"SELECT {key} FROM t WHERE ({where})", where, what)]


def _run(table: pa.Table, sql: str, where: str, what: str) -> list[tuple[object, ...]]:
    check_expression(where, what)
    con = connect({"t": table})
    try:
        with deadline(
            con, EXPRESSION_TIMEOUT_S, f"--where {where!r}", "an expression over rows should be quick"
        ):
            return con.sql(sql).fetchall()
    except duckdb.Error as exc:
        raise QueryError(
            f"--where {where!r} is not a valid expression over {what}: {first_line(exc)}"
        ) from None
    finally:
        con.close()
