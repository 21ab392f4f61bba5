"""The admin's pages with control, bidirectional and invisible characters written out (common/text.py).

Django escapes HTML, not these: a goal holding U+202E would read backwards on the approval
queue, and a zero-width or control character would hide what an approver approves. Every
admin page is filtered once here, whatever model, field or message the text came from.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from common.text import printable


class AdminTextShown:
    """Write out the control, bidirectional and invisible characters of the admin's HTML pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            response.streaming
            or not response.get("Content-Type", "").startswith("text/html")
            or not request.path.startswith(reverse("admin:index"))
        ):
            return response
        charset = response.charset or "utf-8"
        text = response.content.decode(charset, errors="replace")
        shown = printable(text)
        if shown != text:
            response.content = shown.encode(charset)
            if response.has_header("Content-Length"):
                response["Content-Length"] = str(len(response.content))
        return response
