from __future__ import annotations

import logging

from django.db import DataError, InterfaceError, OperationalError
from django.http import JsonResponse
from ninja.errors import HttpError

from iops.lib.text import printable, unstorable_text

logger = logging.getLogger(__name__)

RETRY_AFTER_UNAVAILABLE = "2"


class FieldHttpError(HttpError):
    """An HttpError that names the fields at fault: the API's handler answers them as `errors`."""

    def __init__(self, status_code: int, message: str, errors: list[dict[str, str]]):
        super().__init__(status_code, message)
        self.errors = errors


def json_error(
    status: int, error: str, errors: list[dict[str, str]] | None = None, **headers: str
) -> JsonResponse:
    """The one error shape of the API: {"error": ..., "errors": [{"field", "message"}]}."""
    response = JsonResponse({"error": error, "errors": errors or []}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response


class UnstorableInputMiddleware:
    """A path or query parameter PostgreSQL cannot hold (NUL) is refused with the API's 400 before any
    view, admin filter or search sends it to the database (issue 21). Lone surrogates cannot arrive
    here: Django decodes the query string and daphne the path with replacement characters."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = unstorable_text(request.path)
        if problem is not None:
            return json_error(400, "invalid request", [{"field": "path", "message": problem}])
        for name, values in request.GET.lists():
            for text in (name, *values):
                problem = unstorable_text(text)
                if problem is not None:
                    return json_error(
                        400, "invalid request", [{"field": printable(name) or "query", "message": problem}]
                    )
        return self.get_response(request)


class FrameAncestorsMiddleware:
    """Content-Security-Policy frame-ancestors on every response: 'none' (no site may frame IOps), or
    what a view allowed by setting `response.frame_ancestors` (the embedded panels: FRAME_ANCESTORS).
    First in the chain, so static files and early answers carry it too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if "Content-Security-Policy" not in response:
            ancestors = getattr(response, "frame_ancestors", None) or "'none'"
            response["Content-Security-Policy"] = f"frame-ancestors {ancestors}"
        return response


class DatabaseErrorsMiddleware:
    """Database errors a client caused or can wait out, in the API's JSON shape instead of an HTML 500
    (issue 21): the database cannot be reached → 503 with Retry-After, as ingest answers; a read the
    database refuses for a value it cannot represent (an admin date filter at offset -23:59, past
    PostgreSQL's ±15:59; an integer past SQLite's 64 bits, which its driver raises as OverflowError)
    → 400, since a GET writes nothing and only its parameters can be at fault."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, OperationalError | InterfaceError):
            level, note, status, error = logging.WARNING, "database unavailable", 503, "service unavailable"
            fault = {"field": "database", "message": "the database cannot be reached; try again shortly"}
            headers = {"Retry_After": RETRY_AFTER_UNAVAILABLE}
        elif isinstance(exception, DataError | OverflowError) and request.method in ("GET", "HEAD"):
            level, note, status, error = logging.INFO, "read refused by the database", 400, "invalid request"
            fault = {"field": "query", "message": "a parameter is out of the range the database can hold"}
            headers = {}
        else:
            return None
        logger.log(level, note, extra={"path": request.path, "error": str(exception)[:200]})
        return json_error(status, error, [fault], **headers)
