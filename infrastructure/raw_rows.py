"""Row reads and writes for the turn's hot path, without Django's query compiler.

`Model.objects.create()` and `save(update_fields=…)` spend longer building their statement
than the database spends running it (a usage record: 0.67 against 0.19 ms of CPU on this
project's bench machine, docs/performance.md). These write the same row the ORM would:
the same columns, each value prepared by its own field as the ORM prepares it (defaults,
`auto_now_add`, `auto_now`, JSON), in one statement whose text is built once per model,
and like the ORM they mark the transaction for rollback when the statement fails. They
send no signals (nothing in this project listens to the models they write) and take
plain values only, no expressions (`F()`, `Now()`). `select_one` reads a row of raw SQL
into a model instance with the fields' own converters, as `Model.objects.raw()` does.
"""

from collections.abc import Sequence
from typing import TypeVar

from django.db import DatabaseError, connections, router, transaction
from django.db.models import NOT_PROVIDED, Model

M = TypeVar("M", bound=Model)

_INSERTS: dict = {}  # (model, database alias) -> what _insert_sql() returns
_COLUMNS: dict = {}  # (model, table, database alias) -> select list
_READERS: dict = {}  # (model, database alias) -> what _reader() returns


def insert(obj: M) -> M:
    """INSERT `obj` as a new row, as `Model.objects.create()` would, and set its primary
    key (an auto field) from the database. Returns `obj`."""
    insert_all([obj])
    return obj


def insert_all(objs: list[M]) -> list[M]:
    """INSERT `objs`, all of one model, as `Model.objects.bulk_create()` would: in one
    statement where the database returns the new keys of several rows (PostgreSQL,
    SQLite 3.35+) and takes that many parameters, else in several. Sets each object's
    key. Returns `objs`."""
    if not objs:
        return objs
    model = type(objs[0])
    meta = model._meta
    alias = router.db_for_write(model)
    connection = connections[alias]
    if (model, alias) not in _INSERTS:
        _INSERTS[model, alias] = _insert_sql(model, connection)
    fields, head, row, returning = _INSERTS[model, alias]
    values = []
    for obj in objs:
        if type(obj) is not model or obj.pk is not None:
            raise ValueError(f"rows.insert(): each object must be a new {model.__name__}.")
        values.append(
            [
                field.get_db_prep_save(_plain(field.pre_save(obj, True)), connection)
                for field in fields
            ]
        )
    # As many rows per statement as the backend binds (infrastructure/db/postgresql).
    rows_per_statement = connection.ops.bulk_batch_size(fields, objs)
    keys = []
    with transaction.mark_for_rollback_on_error(alias), connection.cursor() as cursor:
        if returning:
            for start in range(0, len(values), rows_per_statement):
                batch = values[start : start + rows_per_statement]
                sql = f"{head} {', '.join([row] * len(batch))} {returning}"
                cursor.execute(sql, [value for params in batch for value in params])
                keys += [key for (key,) in connection.ops.fetch_returned_insert_rows(cursor)]
        else:
            for params in values:
                cursor.execute(f"{head} {row}", params)
                keys.append(connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column))
    for obj, key in zip(objs, keys, strict=True):
        setattr(obj, meta.pk.attname, meta.pk.to_python(key))
        obj._state.adding = False
        obj._state.db = alias
    return objs


def update(obj, fields: list[str]) -> None:
    """UPDATE `fields` of `obj`'s row, as `obj.save(update_fields=fields)` would (an
    `auto_now` field among them is set to now); DatabaseError if the row is not there."""
    meta = obj._meta
    values = {name: meta.get_field(name).pre_save(obj, False) for name in fields}
    alias = router.db_for_write(type(obj), instance=obj)
    if _update(type(obj), alias, values, {"pk": obj.pk}) != 1:
        raise DatabaseError("Save with update_fields did not affect any rows.")


def update_where(model, values: dict, **where) -> int:
    """`model.objects.filter(**where).update(**values)` for plain equality conditions
    (`pk` or a field's name; not None), in one statement. Returns how many rows changed."""
    return _update(model, router.db_for_write(model), values, where)


def _update(model, alias: str, values: dict, where: dict) -> int:
    meta = model._meta
    connection = connections[alias]
    quote = connection.ops.quote_name
    assignments, params = [], []
    for name, value in values.items():
        field = meta.get_field(name)
        if hasattr(value, "prepare_database_save"):  # a model instance for a foreign key
            value = value.prepare_database_save(field)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(_plain(value), connection))
    conditions = []
    for name, value in where.items():
        if value is None:
            raise ValueError(f"rows: {name}=None as a condition would match nothing.")
        field = meta.pk if name == "pk" else meta.get_field(name)
        conditions.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_value(_plain(value), connection))
    sql = "UPDATE {} SET {} WHERE {}".format(  # noqa: S608 (names from the model)
        quote(meta.db_table), ", ".join(assignments), " AND ".join(conditions)
    )
    with transaction.mark_for_rollback_on_error(alias), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def columns(model, table: str | None = None) -> str:
    """The model's columns as a select list (`table.column, …`), for raw SQL that reads
    whole rows. Named, not `*`: a prepared `SELECT *` fails once a migration adds a
    column ("cached plan must not change result type")."""
    meta = model._meta
    connection = connections[router.db_for_read(model)]
    key = (model, table, connection.alias)
    if key not in _COLUMNS:
        quote = connection.ops.quote_name
        prefix = f"{quote(table)}." if table else ""
        _COLUMNS[key] = ", ".join(prefix + quote(field.column) for field in meta.concrete_fields)
    return _COLUMNS[key]


def select_one(model: type[M], sql: str, params: Sequence[object]) -> M | None:
    """The first row of `sql` as a `model` instance, as `model.objects.raw(sql, params)`
    gives it, or None: without the set-up RawQuerySet does for each query (half of its
    cost for one row). The select list starts with `columns(model)`; columns after those
    become attributes of the instance."""
    alias = router.db_for_read(model)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
        names = [column[0] for column in cursor.description]
    if row is None:
        return None
    if (model, alias) not in _READERS:
        _READERS[model, alias] = _reader(model, connection)
    attnames, converters = _READERS[model, alias]
    count = len(attnames)
    if names[:count] != [column for _, column in attnames]:
        raise ValueError(
            f"rows.select_one(): the select list must start with {model.__name__}'s columns."
        )
    values = list(row[:count])
    for index, convert, expression in converters:
        values[index] = convert(values[index], expression, connection)
    obj = model.from_db(alias, [attname for attname, _ in attnames], values)
    for name, value in zip(names[count:], row[count:], strict=True):
        setattr(obj, name, value)
    return obj


def _reader(model, connection):
    """((attname, column) of each concrete field, [(index, converter, column expression)])"""
    meta = model._meta
    converters = []
    for index, field in enumerate(meta.concrete_fields):
        expression = field.get_col(meta.db_table)
        for convert in connection.ops.get_db_converters(expression) + field.get_db_converters(
            connection
        ):
            converters.append((index, convert, expression))
    return [(field.attname, field.column) for field in meta.concrete_fields], converters


def _plain(value):
    if hasattr(value, "resolve_expression"):
        raise TypeError(f"rows: {value!r} is an expression; these writes take plain values.")
    return value


def _insert_sql(model, connection):
    """(fields, "INSERT INTO … VALUES", one row's "(%s, …)", "RETURNING key" or "")."""
    meta = model._meta
    if meta.parents or meta.auto_field is None:
        raise TypeError(f"rows.insert(): {model.__name__} needs one table and an auto key.")
    fields = [field for field in meta.local_concrete_fields if field is not meta.auto_field]
    if any(field.db_default is not NOT_PROVIDED or field.generated for field in fields):
        raise TypeError(f"rows.insert(): {model.__name__} has fields the database fills.")
    quote = connection.ops.quote_name
    head = "INSERT INTO {} ({}) VALUES".format(
        quote(meta.db_table), ", ".join(quote(field.column) for field in fields)
    )
    row = "({})".format(", ".join(["%s"] * len(fields)))
    returning = ""
    if connection.features.can_return_rows_from_bulk_insert:
        returning, _ = connection.ops.return_insert_columns([meta.pk])
    return fields, head, row, returning
