"""The read/write API under /api/ (API key or staff session), documented at /api/openapi.json and /api/docs."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.operation import PathView
from ninja.security import APIKeyHeader, HttpBearer, SessionAuth

from ingest.keys import api_key_authenticate, key_from_headers
from iops.lib.http import FieldHttpError, json_error

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _scoped_key(request: HttpRequest, plaintext: str):
    """The key for this secret if it may do what the request does: `read` for reads, `act` for the alert
    actions (the API's only writes; ingest has its own route). A valid key without the scope is a 403
    naming it, so its owner knows what to ask for; an unknown key falls through to 401."""
    key = api_key_authenticate(plaintext)
    if key is None:
        return None
    scope = "read" if request.method in SAFE_METHODS else "act"
    if scope not in key.scopes:
        raise FieldHttpError(
            403,
            "forbidden",
            [
                {
                    "field": "Authorization",
                    "message": f"this API key lacks the {scope} scope (admin → API keys)",
                }
            ],
        )
    return key


class BearerKey(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str):
        return _scoped_key(request, token)


class HeaderKey(APIKeyHeader):
    param_name = "X-API-Key"

    def authenticate(self, request: HttpRequest, key: str | None):
        return _scoped_key(request, key) if key else None


class StaffSession(SessionAuth):
    """The dashboard's own session (CSRF-checked for writes); staff only."""

    def _get_key(self, request: HttpRequest):
        # No session cookie: nothing to check CSRF for. The request is unauthenticated (401), not a
        # forged session write (ninja's cookie auth answered 403 "CSRF check Failed" to anyone).
        if settings.SESSION_COOKIE_NAME not in request.COOKIES:
            return None
        return super()._get_key(request)

    def authenticate(self, request: HttpRequest, key: str | None):
        user = getattr(request, "user", None)
        return user if user is not None and user.is_authenticated and user.is_staff else None


def _is_staff(request: HttpRequest) -> bool:
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff)


def _unauthorized():
    return json_error(
        401,
        "authentication required",
        [{"field": "Authorization", "message": "API key or staff session required"}],
    )


def key_or_staff_required(view):
    """/api/openapi.json and /api/docs: a staff session or an API key with the read scope (a script
    reads the document with the key it calls the API with); anything else is the API's JSON 401 or 403,
    never a login redirect."""

    def wrapper(request: HttpRequest, *args, **kwargs):
        if _is_staff(request):
            return view(request, *args, **kwargs)
        plaintext = key_from_headers(request.headers)
        try:
            key = _scoped_key(request, plaintext) if plaintext else None
        except FieldHttpError as exc:
            return json_error(exc.status_code, exc.message, exc.errors)
        return view(request, *args, **kwargs) if key is not None else _unauthorized()

    return wrapper


def api_not_found(request: HttpRequest, rest: str = ""):
    """Any path under /api/ no operation serves: JSON, 401 without a credential (as every operation
    answers first), 404 with one — never Django's HTML page."""
    plaintext = key_from_headers(request.headers)
    if not _is_staff(request) and (not plaintext or api_key_authenticate(plaintext) is None):
        return _unauthorized()
    return json_error(404, "not found", [{"field": "path", "message": f"no API operation at {request.path}"}])


class IopsAPI(NinjaAPI):
    """The generated document plus POST /api/ingest: a plain fast view outside ninja (issue #3),
    documented from the same pydantic models it validates with (ingest/openapi.py)."""

    def get_openapi_schema(self, *, path_prefix=None, path_params=None):
        from ingest.openapi import add_ingest_path

        document = super().get_openapi_schema(path_prefix=path_prefix, path_params=path_params)
        _document_errors(document)
        return add_ingest_path(document, prefix=document.path_prefix or "/api/")


API_ERROR = {
    "title": "ApiError",
    "type": "object",
    "required": ["error", "errors"],
    "properties": {
        "error": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def _document_errors(document) -> None:
    """Every operation can answer the one error shape: 400 (a parameter or body field), 401, 503 (database
    down, with Retry-After) and 404 where the path names an object. Declared responses are kept."""
    document.setdefault("components", {}).setdefault("schemas", {})["ApiError"] = API_ERROR
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ApiError"}}}}
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            wanted = {
                "400": "invalid parameter or body",
                "401": "API key or staff session required",
                "403": "the API key lacks the scope: read (GET) or act (alert actions)",
                "503": "the database cannot be reached; retry after the Retry-After header's seconds",
            }
            if "{" in path:
                wanted["404"] = "no such object"
            for code, description in wanted.items():
                responses.setdefault(code, {"description": description, **ref})


def _not_allowed(self: PathView):
    """Ninja answers a wrong method with a plain-text 405; the API answers JSON like every other error."""
    allowed = sorted({m for op in self.operations for m in op.methods})
    response = json_error(
        405, "method not allowed", [{"field": "method", "message": f"allowed: {', '.join(allowed)}"}]
    )
    response["Allow"] = ", ".join(allowed)
    return response


PathView._not_allowed = _not_allowed  # type: ignore[method-assign]  # ninja has no hook for its 405


api = IopsAPI(
    title="IOps API",
    version="1",
    description="Operations command center: ingest, KPIs, entities, alerts, insights.",
    auth=[BearerKey(), HeaderKey(), StaffSession()],
    urls_namespace="api",
    docs_decorator=key_or_staff_required,  # the spec and docs are not public
)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request, exc):
    return _unauthorized()


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    errors = []
    for err in exc.errors:
        loc = [str(p) for p in err.get("loc", []) if p not in ("query", "path", "body")]
        errors.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    return json_error(400, "invalid request", errors)


@api.exception_handler(Http404)
def _not_found(request, exc):
    return json_error(404, "not found", [{"field": "id", "message": str(exc) or "no such object"}])


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    errors = getattr(exc, "errors", None) or []
    if exc.status_code == 400 and not errors:
        # Ninja's own 400s ("Cannot parse request body") are about the body.
        errors = [{"field": "body", "message": str(exc)}]
    return json_error(exc.status_code, str(exc), errors)


from alerts.api import router as alerts_router  # noqa: E402
from alerts.silences_api import router as silences_router  # noqa: E402
from dashboard.api import router as dashboard_router  # noqa: E402
from dashboard.embed import router as embed_router  # noqa: E402
from dashboard.export import router as export_router  # noqa: E402
from insights.api import router as insights_router  # noqa: E402
from metrics.api import router as metrics_router  # noqa: E402

api.add_router("/", dashboard_router)
api.add_router("/entities", metrics_router)
api.add_router("/alerts", alerts_router)
api.add_router("/silences", silences_router)
api.add_router("/insights", insights_router)
api.add_router("/export", export_router)
api.add_router("/", embed_router)
