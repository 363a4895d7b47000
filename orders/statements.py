"""Statements for the hot paths, without the ORM's compilation on every call.

The ORM builds and compiles a statement anew each time it runs one: 0.2 to 0.5 ms of Python
for an insert or a filtered select, several times what the database spends on it. Order
intake runs a handful per request (docs/performance.md, "API"), and these helpers let it run
them from SQL built once:

- `PreparedQuery`: a queryset, written with the ORM as usual, compiled once and run again with
  new values for its parameters. The query stays defined in one place (a selector); only its
  compilation is kept.
- `insert` and `update`: one row of a model, with the values its fields prepare exactly as
  `save()` prepares them (defaults, `auto_now`, JSON, durations).
- `insert_with_event`: a row and the row that records it (an order and its "created" event) in
  one statement on PostgreSQL, atomic without a transaction's BEGIN and COMMIT round trips.

A model with `pre_save` or `post_save` receivers is written with `save()` instead, so that its
receivers run: these helpers are faster, never different.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from django.db import connections, models, router, transaction
from django.db.models import QuerySet, signals


@functools.cache
def _fields(model: type[models.Model], exclude: tuple[str, ...] = ()) -> tuple[models.Field, ...]:
    return tuple(f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in exclude)


@functools.cache
def _insert_sql(model: type[models.Model], using: str, exclude: tuple[str, ...] = ()) -> tuple[str, str, str]:
    """The quoted table, its columns and as many placeholders, for a model's fields but `exclude`."""
    quote = connections[using].ops.quote_name
    fields = _fields(model, exclude)
    return quote(model._meta.db_table), ", ".join(quote(f.column) for f in fields), ", ".join(["%s"] * len(fields))


def _values(obj: models.Model, connection, exclude: tuple[str, ...] = ()) -> list[Any]:
    """`obj`'s values for an INSERT, prepared as `save()` prepares them."""
    return [f.get_db_prep_save(f.pre_save(obj, add=True), connection=connection) for f in _fields(type(obj), exclude)]


def _has_save_receivers(model: type[models.Model]) -> bool:
    return signals.pre_save.has_listeners(model) or signals.post_save.has_listeners(model)


def _saved(obj: models.Model, pk: int, using: str) -> None:
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = using


def insert(obj: models.Model) -> models.Model:
    """INSERT `obj` (one statement, autocommitted outside a transaction) and set its primary key.
    Inside a transaction a failed insert breaks it, as a failed statement does: the caller
    wraps it in `transaction.atomic()` when it means to carry on."""
    model = type(obj)
    using = router.db_for_write(model)
    if _has_save_receivers(model):
        obj.save(force_insert=True, using=using)
        return obj
    connection = connections[using]
    table, columns, placeholders = _insert_sql(model, using)
    sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
    values = _values(obj, connection)
    with connection.cursor() as cursor:
        if connection.features.can_return_columns_from_insert:
            cursor.execute(f"{sql} RETURNING {connection.ops.quote_name(model._meta.pk.column)}", values)
            pk = cursor.fetchone()[0]
        else:
            cursor.execute(sql, values)
            pk = connection.ops.last_insert_id(cursor, model._meta.db_table, model._meta.pk.column)
    _saved(obj, pk, using)
    return obj


def update(model: type[models.Model], pk: Any, **values: Any) -> int:
    """UPDATE one row by primary key with `values` (field names), prepared by their fields.
    Returns the number of rows changed (0 when the row is gone). Like `QuerySet.update()`, it
    sends no signals."""
    using = router.db_for_write(model)
    connection = connections[using]
    quote = connection.ops.quote_name
    fields = [model._meta.get_field(name) for name in values]
    params = [f.get_db_prep_save(values[f.name], connection=connection) for f in fields]
    sql = (f"UPDATE {quote(model._meta.db_table)} SET {', '.join(f'{quote(f.column)} = %s' for f in fields)} "
           f"WHERE {quote(model._meta.pk.column)} = %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, model._meta.pk.get_db_prep_value(pk, connection)])
        return cursor.rowcount


def insert_with_event(obj: models.Model, event: models.Model, *, link: str) -> None:
    """INSERT `obj` and then `event`, whose foreign key `link` (an attname, like "order_id")
    points at `obj`: both or neither. On PostgreSQL one statement (the event's INSERT selects
    from a data-modifying CTE), elsewhere two inserts in a transaction. Unique violations raise
    IntegrityError as `save()` does, with nothing written."""
    model, event_model = type(obj), type(event)
    using = router.db_for_write(model)
    connection = connections[using]
    if connection.vendor != "postgresql" or _has_save_receivers(model) or _has_save_receivers(event_model):
        with transaction.atomic(using=using):
            insert(obj)
            setattr(event, link, obj.pk)
            insert(event)
        return
    sql = _insert_with_event_sql(model, event_model, link, using)
    values = [*_values(obj, connection), *_values(event, connection, exclude=(link,))]
    # Inside a caller's transaction, a savepoint: a unique violation must not break that transaction.
    savepoint = transaction.atomic(using=using) if connection.in_atomic_block else nullcontext()
    with savepoint, connection.cursor() as cursor:
        cursor.execute(sql, values)
        obj_pk, event_pk = cursor.fetchone()
    _saved(obj, obj_pk, using)
    setattr(event, link, obj_pk)
    _saved(event, event_pk, using)


@functools.cache
def _insert_with_event_sql(model: type[models.Model], event_model: type[models.Model], link: str, using: str) -> str:
    """One statement: the row, then the event selecting the row's new key from a CTE."""
    quote = connections[using].ops.quote_name
    table, columns, placeholders = _insert_sql(model, using)
    event_table, event_columns, event_placeholders = _insert_sql(event_model, using, exclude=(link,))
    pk, link_column = quote(model._meta.pk.column), quote(event_model._meta.get_field(link).column)
    return (
        f"WITH new_row AS (INSERT INTO {table} ({columns}) VALUES ({placeholders}) RETURNING {pk}) "
        f"INSERT INTO {event_table} ({link_column}, {event_columns}) "
        f"SELECT new_row.{pk}, {event_placeholders} FROM new_row "
        f"RETURNING {link_column}, {quote(event_model._meta.pk.column)}"
    )


class PreparedQuery:
    """A queryset compiled once per database, then run with new values for named parameters.

        member_writable = PreparedQuery(Merchant, lambda user_id: writable_for_member(user_id)[:2],
                                        user_id=-48_611)
        merchants = member_writable(user_id=user.pk)

    `build` returns the queryset; it is called once with a stand-in value for each parameter
    (a value of the parameter's type that the query uses nowhere else), and each stand-in must
    appear exactly once among the compiled statement's parameters. Rows come back as model
    instances, converted by the fields as the ORM converts them. Only for querysets that select
    their model's own columns (no `select_related`, `values` or annotations)."""

    def __init__(self, model: type[models.Model], build: Callable[..., QuerySet], **stand_ins: Any) -> None:
        self.model = model
        self._build = build
        self._stand_ins = stand_ins
        self._compiled: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def _compile(self, using: str) -> tuple:
        compiled = self._compiled.get(using)
        if compiled is not None:
            return compiled
        with self._lock:
            compiled = self._compiled.get(using)  # another thread may have compiled it meanwhile
            if compiled is not None:
                return compiled
            queryset = self._build(**self._stand_ins)
            if queryset.model is not self.model:
                raise ValueError(f"the queryset is of {queryset.model.__name__}, not {self.model.__name__}")
            compiler = queryset.query.get_compiler(using=using)
            sql, params = compiler.as_sql()
            klass_info = compiler.klass_info
            if (queryset._iterable_class is not models.query.ModelIterable or compiler.annotation_col_map
                    or klass_info.get("related_klass_infos")
                    or klass_info["select_fields"] != list(range(len(compiler.select)))):
                raise ValueError("PreparedQuery needs a queryset of plain model instances")
            slots = {}
            for name, stand_in in self._stand_ins.items():
                positions = [i for i, param in enumerate(params) if type(param) is type(stand_in) and param == stand_in]
                if len(positions) != 1:
                    raise ValueError(f"the stand-in for {name!r} appears {len(positions)} times in the parameters")
                slots[name] = positions[0]
            select = [compiler.select[i][0] for i in klass_info["select_fields"]]
            attnames = [expression.target.attname for expression in select]
            converters = compiler.get_converters(select)
            compiled = (sql, list(params), slots, attnames, compiler, converters)
            self._compiled[using] = compiled
            return compiled

    def __call__(self, *, using: str | None = None, **values: Any) -> list[models.Model]:
        if set(values) != set(self._stand_ins):
            raise TypeError(f"expected the parameters {sorted(self._stand_ins)}, got {sorted(values)}")
        sql, params, slots, attnames, compiler, converters = self._compile(using or router.db_for_read(self.model))
        params = list(params)
        for name, slot in slots.items():
            params[slot] = values[name]
        db = compiler.using
        with connections[db].cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        if converters:
            rows = compiler.apply_converters(rows, converters)
        return [self.model.from_db(db, attnames, tuple(row)) for row in rows]
