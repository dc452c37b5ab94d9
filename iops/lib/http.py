from __future__ import annotations

from django.http import JsonResponse


def json_error(
    status: int, error: str, errors: list[dict[str, str]] | None = None, **headers: str
) -> JsonResponse:
    """The one error shape of the API: {"error": ..., "errors": [{"field", "message"}]}."""
    response = JsonResponse({"error": error, "errors": errors or []}, status=status)
    for name, value in headers.items():
        response[name.replace("_", "-")] = value
    return response
