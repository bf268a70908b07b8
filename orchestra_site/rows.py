"""One-row writes for the turn's hot path, without Django's query compiler.

`Model.objects.create()` and `save(update_fields=…)` spend longer building their statement
than the database spends running it (a usage record: 0.67 against 0.19 ms of CPU on this
project's bench machine, docs/performance.md). These write the same row the ORM would:
the same columns, each value prepared by its own field as the ORM prepares it (defaults,
`auto_now_add`, `auto_now`, JSON), in one statement whose text is built once per model.
They send no signals; nothing in this project listens to the models they write.
"""

from django.db import connections, router
from django.db.models import NOT_PROVIDED

_INSERTS: dict = {}  # (model, database alias) -> (fields, SQL, returning parameters)


def insert(obj):
    """INSERT `obj` as a new row, as `obj.save(force_insert=True)` would, and set its
    primary key from the database. Returns `obj`."""
    model = type(obj)
    alias = router.db_for_write(model, instance=obj)
    connection = connections[alias]
    key = (model, alias)
    if key not in _INSERTS:
        _INSERTS[key] = _insert_sql(model, connection)
    fields, sql, returning_params = _INSERTS[key]
    values = [field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields]
    meta = model._meta
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, *(returning_params or ())])
        if returning_params is None:
            pk = connection.ops.last_insert_id(cursor, meta.db_table, meta.pk.column)
        else:
            (pk,) = connection.ops.fetch_returned_insert_columns(cursor, returning_params)
    setattr(obj, meta.pk.attname, meta.pk.to_python(pk))
    obj._state.adding = False
    obj._state.db = alias
    return obj


def update(obj, fields: list[str]) -> bool:
    """UPDATE `fields` of `obj`'s row, as `obj.save(update_fields=fields)` would (an
    `auto_now` field among them is set to now). Returns whether the row was there."""
    meta = obj._meta
    values = {name: meta.get_field(name).pre_save(obj, False) for name in fields}
    return update_where(type(obj), values, pk=obj.pk) == 1


def update_where(model, values: dict, **where) -> int:
    """`model.objects.filter(**where).update(**values)` for plain equality conditions
    (`pk` or field names; no None), in one statement. Returns how many rows changed."""
    meta = model._meta
    connection = connections[router.db_for_write(model)]
    quote = connection.ops.quote_name
    assignments, params = [], []
    for name, value in values.items():
        field = meta.get_field(name)
        if hasattr(value, "prepare_database_save"):  # a model instance for a foreign key
            value = value.prepare_database_save(field)
        assignments.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_save(value, connection))
    conditions = []
    for name, value in where.items():
        if value is None:
            raise ValueError(f"update_where({name}=None): equality with NULL matches nothing.")
        field = meta.pk if name == "pk" else meta.get_field(name)
        conditions.append(f"{quote(field.column)} = %s")
        params.append(field.get_db_prep_value(value, connection))
    sql = "UPDATE {} SET {} WHERE {}".format(  # noqa: S608 (names from the model)
        quote(meta.db_table), ", ".join(assignments), " AND ".join(conditions)
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def _insert_sql(model, connection):
    meta = model._meta
    if meta.parents:
        raise TypeError(f"{model.__name__}: rows.insert() writes one table only.")
    fields = [field for field in meta.local_concrete_fields if field is not meta.auto_field]
    if any(field.db_default is not NOT_PROVIDED for field in fields):
        raise TypeError(f"{model.__name__}: rows.insert() does not send database defaults.")
    quote = connection.ops.quote_name
    sql = "INSERT INTO {} ({}) VALUES ({})".format(  # noqa: S608 (names from the model)
        quote(meta.db_table),
        ", ".join(quote(field.column) for field in fields),
        ", ".join(["%s"] * len(fields)),
    )
    returning_params = None
    if connection.features.can_return_columns_from_insert:
        returning_sql, returning_params = connection.ops.return_insert_columns([meta.pk])
        sql += " " + returning_sql
    return fields, sql, returning_params
