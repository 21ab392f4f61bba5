"""ModelSerializer with its fields mapped from the model once per class instead of on every use."""

import copy
from typing import Any

from rest_framework import serializers


# DRF's ModelSerializer maps the model's fields to serializer fields each time a serializer is
# made (most of the time of showing one approval), though the mapping depends only on the class:
# these serializers change no field per request. It is made once; each use gets its own copy,
# bound to it, as DRF copies the declared fields. (No docstring: drf-spectacular would show it
# as every subclass's description.)
class ModelSerializer(serializers.ModelSerializer):
    def get_fields(self) -> dict[str, Any]:
        cls = type(self)
        mapped = cls.__dict__.get("_fields_mapped")
        if mapped is None:  # two threads may both map them at first: the same result
            mapped = super().get_fields()
            setattr(cls, "_fields_mapped", mapped)  # noqa: B010 (a class attribute DRF does not declare)
        return copy.deepcopy(mapped)
