"""One row of a queryset by its primary key (or another unique key), from SQL the ORM compiles once per database.

The ORM compiles a queryset's SQL each time it is evaluated. For a read by key with a few
select_related joins, done on every request of a hot path, compiling takes longer than
PostgreSQL takes to plan and run the statement. CompiledGet keeps what compiling produced
(the statement, where each model's columns are in a row, the populators of the related
objects) and builds the same instances the ORM's get() builds: related objects cached as
select_related caches them, converters applied, nothing deferred.
"""

from typing import Any, Generic, TypeVar
from uuid import UUID

from django.db import connections
from django.db.models import Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.transaction import TransactionManagementError

from common.prepared import prepared_cursor

M = TypeVar("M", bound=Model)

# A key no row has, to find the key's place in the compiled statement's parameters (a UUID or a text key).
_SENTINEL = UUID("00000000-0000-4000-8000-00000000c0de")
_TEXT_SENTINEL = "compiled-get:00000000c0de"


def _sentinel(field: Any) -> Any:
    target = getattr(field, "target_field", field)  # a relation reads by its target's values
    return _TEXT_SENTINEL if target.get_internal_type() in ("CharField", "TextField") else _SENTINEL


class _Compiled:
    """What compiling the queryset produced for one database (shared by threads: nothing in it changes)."""

    def __init__(self, queryset: QuerySet[Any], using: str, by: str) -> None:
        self.key: Any = queryset.model._meta.pk if by == "pk" else queryset.model._meta.get_field(by)
        query = queryset.filter(**{by: _sentinel(self.key)}).order_by().query
        compiler = query.get_compiler(using=using)
        sql, params = compiler.as_sql()
        connection = connections[using]
        sentinel = self.key.get_db_prep_value(_sentinel(self.key), connection)
        if compiler.annotation_col_map:
            raise ValueError(
                f"CompiledGet takes a UUID or text key and a queryset with no annotation: {queryset.query}"
            )
        if list(params) != [sentinel]:  # the key must be the one value the statement takes
            raise ValueError(f"CompiledGet takes a queryset with no filter on a value (isnull only): {queryset.query}")
        self.sql = sql
        klass_info = compiler.klass_info
        self.model: type[Model] = klass_info["model"]
        start, end = klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1
        self.columns = slice(start, end)
        self.attnames = [column[0].target.attname for column in compiler.select[start:end]]
        self.populators = get_related_populators(klass_info, compiler.select, using)  # type: ignore[call-arg]
        fields = [column[0] for column in compiler.select[0 : compiler.col_count]]
        # Converters take the connection they run on: each read passes its own (see _row).
        self.converters = [
            (position, converters, expression)
            for position, (converters, expression) in compiler.get_converters(fields).items()
        ]


class CompiledGet(Generic[M]):
    """Get one object of `queryset` by primary key, as queryset.get(pk=key) would, with its SQL compiled once.

    For a model keyed by a UUID or a text; `by` names another unique field to read by instead (a
    one-to-one relation to a UUID-keyed model, as queryset.get(plan=key)). The queryset may
    select_related and select_for_update (then read inside a transaction, as the ORM
    requires); it takes no annotation, and no filter but on whether a relation is null
    (which makes its join an inner one: select_for_update may then lock the related rows).
    Raises the model's DoesNotExist as get() does.
    """

    def __init__(self, queryset: QuerySet[M], *, by: str = "pk") -> None:
        if by != "pk" and not getattr(queryset.model._meta.get_field(by), "unique", False):
            raise ValueError(f"CompiledGet reads by a unique field, not {by!r}")
        self._queryset = queryset
        self._by = by
        self._compiled: dict[str, _Compiled] = {}

    def get(self, key: Any, *, using: str = "default") -> M:
        connection = connections[using]
        if self._queryset.query.select_for_update and connection.get_autocommit():
            raise TransactionManagementError("select_for_update cannot be used outside of a transaction.")
        compiled = self._compiled.get(using)
        if compiled is None:  # two threads may both compile it at first: the same result
            compiled = self._compiled[using] = _Compiled(self._queryset, using, self._by)
        with prepared_cursor(connection) as cursor:  # planned once per connection too (common/prepared.py)
            cursor.execute(compiled.sql, [compiled.key.get_db_prep_value(key, connection)])
            rows = cursor.fetchall()
        if not rows:  # a key is one row at most
            model: Any = self._queryset.model
            raise model.DoesNotExist(f"{model._meta.object_name} matching query does not exist.")
        return self._built(compiled, _row(compiled, rows[0], connection), using)

    @staticmethod
    def _built(compiled: _Compiled, row: list[Any], using: str) -> M:
        obj = compiled.model.from_db(using, compiled.attnames, row[compiled.columns])
        for populator in compiled.populators:
            populator.populate(row, obj)
        return obj  # type: ignore[return-value]


def _row(compiled: _Compiled, values: tuple[Any, ...], connection: Any) -> list[Any]:
    """Return a row with the fields' converters applied, as the ORM's compiler applies them."""
    row = list(values)
    for position, converters, expression in compiled.converters:
        value = row[position]
        for converter in converters:
            value = converter(value, expression, connection)
        row[position] = value
    return row
