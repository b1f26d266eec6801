"""The writes of one unit of work, executed in as few statements as the backend allows.

A unit of work writes several rows (events, projection rows, outbox rows). Each statement
costs a round trip and, above all, client-side Python (docs/measured.md: the client is the
cost). So the plan renders plain SQL once per *shape* (tables, columns, row counts) and
sends it with the driver's own parameter style:

- PostgreSQL: every write in ONE statement, as data-modifying CTEs. Sibling CTEs share one
  snapshot and cannot see each other's rows, so this is used only when no two writes
  target the same row; otherwise the plan falls back to one statement per group.
- SQLite, MySQL/MariaDB: one multi-row INSERT per table group, one UPDATE per row.

A `Notify` (PostgreSQL) becomes the statement's final `SELECT pg_notify(...)`, with every
write as a CTE before it: the relays' wake-up costs no extra round trip. A `Lookup` as an
inserted value is read by the statement itself, `(SELECT column FROM table WHERE key = ?)`
(NULL when no row matches): a value from another table costs no round trip either.

Values go through SQLAlchemy's own bind processors (e.g. UTC datetimes), so the stored
data is identical to what `Connection.execute` with the Table would store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

from outbox.types import bind_processor

__all__ = ["Insert", "Lookup", "Notify", "Update", "WritePlan"]


@dataclass(frozen=True, slots=True)
class Lookup:
    """An inserted value read in the statement: `(SELECT column FROM table WHERE key_column
    = key)`, NULL when no row matches (the key column must be unique)."""

    table: Table
    column: str
    key_column: str
    key: Any

    def __post_init__(self) -> None:
        for name in (self.column, self.key_column):  # rendered into the SQL text
            if name not in self.table.c:
                raise ValueError(f"{self.table.name} has no column {name!r}")


@dataclass(frozen=True, slots=True)
class Insert:
    table: Table
    row: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Update:
    """UPDATE table SET values WHERE id = key."""

    table: Table
    key: str
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notify:
    """`SELECT pg_notify(channel, '')`, delivered when the transaction commits."""

    channel: str

    def __post_init__(self) -> None:
        # Rendered into the SQL text, so only a plain identifier is accepted.
        if not self.channel.isidentifier():
            raise ValueError(f"not a channel name: {self.channel!r}")


Write = Insert | Update | Notify

# Shape of one statement: ("i", table, columns, rows) or ("u", table, columns).
_Shape = tuple[str, str, tuple["_Column", ...], int]
# A shape's column: its name, or (name, table, column, key column) where a Lookup gives it.
_Column = str | tuple[str, str, str, str]
# Below SQLite's 32,766 host parameters and psycopg's 65,535 per statement.
MAX_PARAMS = 30_000
_sql_cache: dict[tuple[str, tuple[_Shape, ...]], str] = {}


class WritePlan:
    def __init__(self) -> None:
        self._writes: list[Write] = []

    def insert(self, table: Table, row: dict[str, Any]) -> None:
        self._writes.append(Insert(table, row))

    def notify(self, channel: str) -> None:
        """Wake listeners on commit (PostgreSQL); ignored by the other backends."""
        self._writes.append(Notify(channel))

    def extend(self, writes: list[Write]) -> None:
        self._writes.extend(writes)

    def execute(self, conn: Connection) -> None:
        """Run every write in the caller's transaction, in order."""
        if conn.dialect.name != "postgresql":
            self._writes = [w for w in self._writes if not isinstance(w, Notify)]
        if not self._writes:
            return
        groups = self._groups()
        # A statement is a list of groups: all of them at once, or one group each.
        statements = [groups] if self._fits_one_statement(conn.dialect) else [[g] for g in groups]
        if conn.dialect.name == "sqlite":
            _run_on_cursor(conn, statements)
        elif len(statements) > 1 and _autocommit(conn):
            _run_in_transaction(conn, statements)
        else:
            for statement in statements:
                conn.exec_driver_sql(*_compile(conn.dialect, statement))

    def _groups(self) -> list[list[Write]]:
        """Consecutive inserts into one table with the same columns become one statement."""
        groups: list[list[Write]] = []
        for write in self._writes:
            last = groups[-1][0] if groups else None
            if (
                isinstance(write, Insert)
                and isinstance(last, Insert)
                and last.table is write.table
                and last.row.keys() == write.row.keys()
                and _columns(last.row) == _columns(write.row)
                and (len(groups[-1]) + 1) * len(write.row) <= MAX_PARAMS
            ):
                groups[-1].append(write)
            else:
                groups.append([write])
        return groups

    def _fits_one_statement(self, dialect: Dialect) -> bool:
        """PostgreSQL only, within the parameter limit, and no row written twice: sibling
        CTEs share a snapshot, so a second write to a row would not see the first."""
        if dialect.name != "postgresql":
            return False
        params = sum(
            len(w.row) if isinstance(w, Insert) else len(w.values) + 1
            for w in self._writes
            if not isinstance(w, Notify)
        )
        if params > MAX_PARAMS:
            return False
        seen: set[tuple[str, Any]] = set()
        for write in self._writes:
            if isinstance(write, Notify):
                continue
            # Rows without an id of their own (event, outbox, recipient rows get generated or
            # composite keys) are always new rows, never a second write to an existing one.
            key = write.key if isinstance(write, Update) else write.row.get("id")
            if key is None:
                continue
            target = (write.table.name, key)
            if target in seen:
                return False
            seen.add(target)
        return True


def _autocommit(conn: Connection) -> bool:
    return bool(conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT")


def _run_in_transaction(conn: Connection, statements: list[list[list[Write]]]) -> None:
    """Writes of several statements on an autocommit connection: one transaction of their
    own (the driver sends what it is given), all of them or none."""
    conn.exec_driver_sql("BEGIN")
    try:
        for statement in statements:
            conn.exec_driver_sql(*_compile(conn.dialect, statement))
    except BaseException:
        if not conn.invalidated:
            conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


def _compile(dialect: Dialect, statement: list[list[Write]]) -> tuple[str, dict[str, Any]]:
    """SQL text (cached per shape) and its parameters p0, p1, ... for one statement."""
    params: dict[str, Any] = {}
    for group in statement:
        _bind(dialect, group, params)
    shapes = tuple(_shape(group) for group in statement)
    sql = _sql_cache.get((dialect.name, shapes))
    if sql is None:
        sql = _sql_cache[(dialect.name, shapes)] = _render(dialect, shapes)
    return sql, params


def _run_on_cursor(conn: Connection, statements: list[list[list[Write]]]) -> None:
    """SQLite runs in-process and never disconnects, so the statements go straight to the
    DBAPI cursor: SQLAlchemy's per-call bookkeeping would cost a third of the command's CPU.
    Driver errors are translated back into SQLAlchemy's exception types."""
    dialect = conn.dialect
    dbapi = dialect.loaded_dbapi
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    sql, params = "", dict[str, Any]()
    try:
        for statement in statements:
            sql, params = _compile(dialect, statement)
            cursor.execute(sql, params)
    except dbapi.Error as exc:
        raise DBAPIError.instance(sql, params, exc, dbapi.Error, dialect=dialect) from exc
    finally:
        cursor.close()


def _columns(row: dict[str, Any]) -> tuple[_Column, ...]:
    """A row's columns as a shape names them: with what each Lookup value reads."""
    return tuple(
        (column, value.table.name, value.column, value.key_column)
        if isinstance(value, Lookup)
        else column
        for column, value in row.items()
    )


def _name(column: _Column) -> str:
    return column if isinstance(column, str) else column[0]


def _shape(group: list[Write]) -> _Shape:
    first = group[0]
    if isinstance(first, Insert):
        return ("i", first.table.name, _columns(first.row), len(group))
    if isinstance(first, Notify):
        return ("n", first.channel, (), 0)
    return ("u", first.table.name, tuple(first.values), 1)


def _bind(dialect: Dialect, group: list[Write], params: dict[str, Any]) -> None:
    """Append this group's values as p0, p1, ... in the order `_render` numbers them."""
    for write in group:
        items: list[tuple[str, Any]]
        if isinstance(write, Notify):
            continue
        if isinstance(write, Insert):
            items = list(write.row.items())
        else:
            items = [*write.values.items(), ("id", write.key)]
        for column, value in items:
            if isinstance(value, Lookup) and isinstance(write, Insert):  # its key is bound
                process = bind_processor(dialect, value.table.c[value.key_column])
                value = value.key  # noqa: PLW2901 - the value bound is the lookup's key
            else:
                process = bind_processor(dialect, write.table.c[column])
            params[f"p{len(params)}"] = process(value) if process is not None else value


def _render(dialect: Dialect, shapes: tuple[_Shape, ...]) -> str:
    """SQL text for the shapes. Identifiers come from Table metadata (`_bind` has already
    looked every column up in its Table), quoted by the dialect; values are parameters."""
    quote = dialect.identifier_preparer.quote
    # sqlite3 takes :name with a dict; psycopg and PyMySQL take %(name)s.
    style = ":{}" if dialect.name == "sqlite" else "%({})s"
    counter = 0

    def param() -> str:
        nonlocal counter
        name = style.format(f"p{counter}")
        counter += 1
        return name

    statements: list[str] = []
    for kind, table, columns, rows in shapes:
        if kind == "i":
            cols = ", ".join(quote(_name(c)) for c in columns)

            def value(column: _Column) -> str:
                if isinstance(column, str):
                    return param()
                _, source, wanted, key = column  # a Lookup: read by the statement
                where = f"{quote(key)} = {param()}"
                return f"(SELECT {quote(wanted)} FROM {quote(source)} WHERE {where})"  # noqa: S608

            values = ", ".join(
                "(" + ", ".join(value(c) for c in columns) + ")" for _ in range(rows)
            )
            statements.append(f"INSERT INTO {quote(table)} ({cols}) VALUES {values}")  # noqa: S608
        elif kind == "n":
            statements.append(f"SELECT pg_notify('{table}', '')")
        else:
            sets = ", ".join(f"{quote(_name(c))} = {param()}" for c in columns)
            where = f"{quote('id')} = {param()}"
            statements.append(f"UPDATE {quote(table)} SET {sets} WHERE {where}")  # noqa: S608
    if len(statements) == 1:
        return statements[0]
    ctes = ", ".join(f"w{n} AS ({stmt})" for n, stmt in enumerate(statements[:-1]))
    return f"WITH {ctes} {statements[-1]}"
