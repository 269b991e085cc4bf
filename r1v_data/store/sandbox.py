"""Running user SQL expressions (`--where`) where they can do no harm.

An expression is evaluated by a DuckDB connection that sees only in-memory Arrow tables, with
file and network access disabled, extensions off and its configuration locked: it can read the
columns it is given and nothing else, and write nothing. Statement separators and comments are
refused up front, so an expression cannot close the query it is placed in.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from r1v_data.errors import QueryError

_FORBIDDEN = (";", "--", "/*")


def connect(tables: dict[str, pa.Table]) -> duckdb.DuckDBPyConnection:
    """A connection that sees only these tables: no files, no network, no extensions."""
    con = duckdb.connect(config={"enable_external_access": False, "autoload_known_extensions": False})
    for name, table in tables.items():
        con.register(name, table)
    con.execute("SET lock_configuration = true")
    return con


def check_expression(where: str, what: str) -> None:
    """Refuse what could end or comment out the surrounding query."""
    for token in _FORBIDDEN:
        if token in where:
            raise QueryError(f"--where {where!r}: {token!r} is not allowed in an expression over {what}")


def matching(table: pa.Table, where: str, what: str, key: str = "sample_id") -> list[str]:
    """The `key` values of the rows of `table` for which `where` is true, in table order."""
    return [r[0] for r in _run(table, f"SELECT {key} FROM t WHERE ({where})", where, what)]


def check_on(table: pa.Table, where: str, what: str) -> None:
    """Evaluate `where` on every row of `table`: a cast that fails on some value fails here."""
    _run(table, f"SELECT count(*) FROM t WHERE ({where})", where, what)


def _run(table: pa.Table, sql: str, where: str, what: str) -> list[tuple[object, ...]]:
    check_expression(where, what)
    con = connect({"t": table})
    try:
        return con.sql(sql).fetchall()
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise QueryError(f"--where {where!r} is not a valid expression over {what}: {first}") from None
    finally:
        con.close()
