"""ModelSerializer with its fields mapped from the model once per class instead of on every use."""

import copy
from typing import Any

from rest_framework import serializers


# DRF's ModelSerializer maps the model's fields to serializer fields each time a serializer is
# made (most of the time of showing one approval), though the mapping depends only on the class:
# these serializers change no field per request. It is made once; each use gets its own copy,
# bound to it (_copied). (No docstring: drf-spectacular would show it as every subclass's
# description.)
class ModelSerializer(serializers.ModelSerializer):
    def get_fields(self) -> dict[str, Any]:
        cls = type(self)
        mapped = cls.__dict__.get("_fields_mapped")
        if mapped is None:  # two threads may both map them at first: the same result
            mapped = super().get_fields()
            setattr(cls, "_fields_mapped", mapped)  # noqa: B010 (a class attribute DRF does not declare)
        return {name: _copied(field) for name, field in mapped.items()}


def _copied(field: serializers.Field) -> serializers.Field:
    """A copy of a mapped field for one serializer to bind: a shallow copy of a plain field, a deep one of a nested one.

    DRF deep-copies a field by calling its constructor again with the arguments it was made
    with (two thirds of the time of showing one approval). Binding sets the copy's own name,
    parent and source, so a plain field's copy shares nothing it changes. A nested
    serializer or a field with a child (ListField) binds that child to itself: those are
    deep-copied, so no two serializers share a child.
    """
    if isinstance(field, serializers.BaseSerializer) or hasattr(field, "child"):
        return copy.deepcopy(field)
    return copy.copy(field)
