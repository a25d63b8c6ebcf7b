"""The OpenAPI document says every error an operation can answer, as a problem document.

``AutoSchema`` (DRF's DEFAULT_SCHEMA_CLASS) adds to each operation the error statuses that the
server's machinery can produce for it, derived from what the operation is, so that a new
endpoint is documented without a line of its own:

- every operation: 406 (an Accept it cannot serve), 429 (throttled), 500;
- a request body: 400 (invalid or malformed) and 415 (not JSON);
- parameters in the query or headers: 400; in the path: 404;
- a paginated list: 400 (a page that is not a whole number from 1) and 404 (past the last);
- a string in a body: the pattern of what DRF refuses (NUL, blank after trimming);
- a list in a body: its minItems and maxItems, as DRF enforces them;
- credentials required: 401; a permission beyond "logged in", or a write that a session
  authenticates (CSRF): 403.

Every status of 400 and above, whether added here or annotated on the view, is answered with
``application/problem+json`` and the ``Problem`` schema (shop/problems.py writes them).
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular import openapi
from rest_framework import permissions, serializers

from shop.problems import PROBLEM_CONTENT_TYPE

NO_NUL = "^[^\\x00]*$"
NOT_BLANK = "^[^\\x00]*[^\\s\\x00][^\\x00]*$"  # something besides white space, no NUL

DESCRIPTIONS = {
    400: "Invalid input: each error in `errors` points at a body field, header or parameter.",
    401: "No credentials, or credentials that are not valid.",
    403: "The credentials do not allow this (or a session's write lacks its CSRF token).",
    404: "No such resource.",
    406: "The Accept header asks for a media type other than JSON.",
    409: "The request conflicts with the state of the resource.",
    415: "The body is not JSON (Content-Type application/json).",
    429: "Too many requests: retry after the seconds in the Retry-After header.",
    500: "The server failed; the body says nothing more.",
}
EXAMPLES = {
    400: {
        "type": "urn:shop:problem:invalid-request",
        "title": "Bad Request",
        "status": 400,
        "detail": "A valid integer is required.",
        "instance": "/api/orders/",
        "code": "invalid",
        "errors": [
            {
                "detail": "A valid integer is required.",
                "code": "invalid",
                "pointer": "#/lines/0/quantity",
            }
        ],
    },
    401: {
        "type": "about:blank",
        "title": "Unauthorized",
        "status": 401,
        "detail": "Authentication credentials were not provided.",
        "instance": "/api/orders/",
        "code": "not_authenticated",
    },
    404: {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "No such order.",
        "instance": "/api/orders/7/",
        "code": "not_found",
    },
}


class ProblemErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong, for a person.")
    code = serializers.CharField(help_text='What is wrong, for a program: "required", "invalid"…')
    pointer = serializers.CharField(
        required=False,
        help_text='A JSON pointer into the body, as a URI fragment: "#/lines/0/sku"; "#" for '
        "the body as a whole.",
    )
    header = serializers.CharField(required=False, help_text="The request header it is about.")
    parameter = serializers.CharField(required=False, help_text="The query parameter it is about.")


class ProblemSerializer(serializers.Serializer):
    """An RFC 9457 problem document."""

    type = serializers.CharField(
        help_text='The kind of problem: "about:blank" (the status says it all) or a '
        "urn:shop:problem:… name."
    )
    title = serializers.CharField(help_text="The HTTP status phrase.")
    status = serializers.IntegerField(min_value=400, max_value=599)
    detail = serializers.CharField(help_text="This occurrence, for a person.")
    instance = serializers.CharField(help_text="The path of the request.")
    code = serializers.CharField(help_text='A stable name for a program: "not_found", …')
    errors = ProblemErrorSerializer(
        many=True, required=False, help_text="Invalid input only: every message, where it points."
    )

    class Meta:
        ref_name = "Problem"


class AutoSchema(openapi.AutoSchema):
    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None:
            return None
        responses = operation.setdefault("responses", {})
        for status in sorted(self._error_statuses(operation)):
            responses.setdefault(str(status), {})
        problem = {"schema": self.resolve_serializer(ProblemSerializer, "response").ref}
        for code, response in responses.items():
            status = int(code) if code.isdigit() else 0
            if status < 400:
                continue
            if not response.get("description"):
                response["description"] = DESCRIPTIONS.get(status, "An error.")
            content = dict(problem)
            if status in EXAMPLES:
                content["example"] = EXAMPLES[status]
            response["content"] = {PROBLEM_CONTENT_TYPE: content}
        operation["responses"] = dict(sorted(responses.items()))
        return operation

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        # DRF enforces a list's allow_empty, min_length and max_length: say so (minItems...).
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        if direction == "request" and isinstance(field, serializers.CharField):
            # DRF refuses NUL characters in every CharField, and a blank one (after trimming).
            if not field.allow_blank and field.min_length is None:
                schema.setdefault("minLength", 1)
            regexes = [v for v in field.validators if isinstance(v, RegexValidator)]
            if "pattern" not in schema and len(regexes) == 1 and not regexes[0].inverse_match:
                schema["pattern"] = regexes[0].regex.pattern.replace("\\Z", "$")
            if "pattern" not in schema:
                blank_refused = field.trim_whitespace and not field.allow_blank
                schema["pattern"] = NOT_BLANK if blank_refused else NO_NUL
        if isinstance(field, serializers.ListSerializer | serializers.ListField):
            minimum = field.min_length if field.min_length is not None else 0
            if not field.allow_empty:
                minimum = max(minimum, 1)
            if minimum:
                schema["minItems"] = minimum
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _error_statuses(self, operation) -> set[int]:
        statuses = {406, 429, 500}
        parameters = operation.get("parameters", [])
        where = {parameter["in"] for parameter in parameters}
        if operation.get("requestBody"):
            statuses |= {400, 415}
        if where & {"query", "header"}:
            statuses.add(400)
        if "path" in where:
            statuses.add(404)
        if any(p["in"] == "query" and p["name"] == "page" for p in parameters):
            statuses.add(404)  # a page past the last
        security = operation.get("security", [{}])
        if any(security):
            # The view reads credentials: a token that is not (or no longer) valid is a 401,
            # even where anonymous callers are welcome.
            statuses.add(401)
        if {} not in security:
            statuses.add(401)
            if self._forbids_some_users() or self.method not in permissions.SAFE_METHODS:
                statuses.add(403)
        return statuses

    def _forbids_some_users(self) -> bool:
        plain = (permissions.AllowAny, permissions.IsAuthenticated)
        return any(not isinstance(p, plain) for p in self.view.get_permissions())
