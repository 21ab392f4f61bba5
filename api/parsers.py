"""The API's request parser: JSON only, with clear errors for bodies Python's own decoder chokes on.

A body nested deeper than Python's recursion limit makes the decoder raise RecursionError,
which DRF's parser lets through as a server error; a body nested deeper than
MAX_BODY_DEPTH is refused here (400 validation_error), before any code that recurses sees it.
(The size limit, DATA_UPLOAD_MAX_MEMORY_SIZE, applies when DRF reads the body: 413, see api/errors.py.)
"""

import codecs
import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions, parsers
from rest_framework.utils.json import strict_constant

from plans.json_values import nested_deeper_than
from plans.shape import MAX_BODY_DEPTH


class JSONParser(parsers.JSONParser):
    """Parse a JSON body, refusing what is nested too deep for the code behind it."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        context = parser_context or {}
        encoding = _text_encoding(context.get("encoding", settings.DEFAULT_CHARSET))
        too_deep = f"JSON parse error - nested more than {MAX_BODY_DEPTH} levels deep."
        try:
            text = codecs.decode(stream.read(), encoding)
            data = json.loads(text, parse_constant=strict_constant if self.strict else None)
        except RecursionError:
            raise exceptions.ParseError(too_deep) from None
        except ValueError as error:
            raise exceptions.ParseError(f"JSON parse error - {error}") from None
        if nested_deeper_than(data, MAX_BODY_DEPTH):
            raise exceptions.ParseError(too_deep)
        return data


def _text_encoding(encoding: str) -> str:
    """Return the charset if it is a text encoding: a bytes-to-bytes codec (bz2_codec) would inflate the body."""
    try:
        "".encode(encoding)
    except (LookupError, UnicodeError):
        raise exceptions.ParseError(f'Unsupported charset "{encoding}" in request Content-Type header.') from None
    return encoding
