from __future__ import annotations

from django.http import JsonResponse
from ninja.errors import HttpError


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
