"""The OpenAPI 3.0 document served at /openapi.json, written by hand from the same
limits that ``service.validation`` enforces (so schemathesis can fuzz the API)."""

from __future__ import annotations

from typing import Any

from service import validation as v

_ERROR_RESPONSES = {
    "400": "BadRequest",
    "404": "NotFound",
    "413": "PayloadTooLarge",
    "415": "UnsupportedMediaType",
    "422": "UnprocessableEntity",
    "502": "WriteOutcomeUnknown",
    "503": "ServiceUnavailable",
    "504": "WriteOutcomeUnknown",
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _errors(*codes: str) -> dict[str, Any]:
    return {code: _ref("responses", _ERROR_RESPONSES[code]) for code in codes}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _error_response(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json(_ref("schemas", "Error"))}
    if retry_after:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


_READ_PATH_HEADERS = {
    "X-Cache": {
        "description": "hit: served by Redis (with stampede protection, possibly after waiting for "
        "another process's load); miss: read from a database, by this request or by the one whose load "
        "it shared, then cached; bypass: cache disabled, breaker open or Redis failing.",
        "schema": {"type": "string", "enum": ["hit", "miss", "bypass"]},
    },
    "X-DB-Node": {
        "description": "The database node that served the read (none for a cache hit).",
        "schema": {"type": "string", "enum": ["replica", "primary", "none"]},
    },
}

_PRODUCT_BODY = {"required": True, "content": _json(_ref("schemas", "ProductInput"))}


def openapi_document() -> dict[str, Any]:
    product_id = _ref("parameters", "ProductId")
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "chaoslab products API",
            "version": "1.0.0",
            "description": "The system under test of the chaos and failover lab: writes go to the "
            "primary through HAProxy, reads to the replica, with a Redis cache-aside on GET /products/{id}.",
        },
        "paths": {
            "/products": {
                "get": {
                    "operationId": "listProducts",
                    "summary": "List products by ascending id (keyset paging), from the replica.",
                    "parameters": [_ref("parameters", "Limit"), _ref("parameters", "AfterId")],
                    "responses": {
                        "200": {"description": "A page of products.", "content": _json(_ref("schemas", "ProductPage"))},
                        **_errors("400", "503"),
                    },
                },
                "post": {
                    "operationId": "createProduct",
                    "summary": "Create a product on the primary.",
                    "requestBody": _PRODUCT_BODY,
                    "responses": {
                        "201": {
                            "description": "Created.",
                            "headers": {
                                "Location": {"description": "The new product's URL.", "schema": {"type": "string"}}
                            },
                            "content": _json(_ref("schemas", "Product")),
                        },
                        **_errors("400", "413", "415", "422", "502", "503", "504"),
                    },
                },
            },
            "/products/{id}": {
                "parameters": [product_id],
                "get": {
                    "operationId": "getProduct",
                    "summary": "Read a product: Redis first, then the replica (cache-aside).",
                    "responses": {
                        "200": {
                            "description": "The product.",
                            "headers": _READ_PATH_HEADERS,
                            "content": _json(_ref("schemas", "Product")),
                        },
                        **_errors("400"),
                        "404": {**_error_response("No such product."), "headers": _READ_PATH_HEADERS},
                        **_errors("503"),
                    },
                },
                "put": {
                    "operationId": "updateProduct",
                    "summary": "Replace a product on the primary, then drop its cache entry.",
                    "requestBody": _PRODUCT_BODY,
                    "responses": {
                        "200": {"description": "The updated product.", "content": _json(_ref("schemas", "Product"))},
                        **_errors("400", "404", "413", "415", "422", "502", "503", "504"),
                    },
                },
                "delete": {
                    "operationId": "deleteProduct",
                    "summary": "Delete a product on the primary, then drop its cache entry.",
                    "responses": {"204": {"description": "Deleted."}, **_errors("400", "404", "502", "503", "504")},
                },
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "State of each dependency and circuit breaker.",
                    "responses": {"200": {"description": "Health report.", "content": _json(_ref("schemas", "Health"))}},
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics.",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "responses": {"200": {"description": "OpenAPI 3.0 document.", "content": _json({"type": "object"})}},
                }
            },
        },
        "components": {
            "parameters": {
                "ProductId": {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "integer", "minimum": v.ID_MIN, "maximum": v.ID_MAX},
                },
                "Limit": {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": v.LIMIT_MIN, "maximum": v.LIMIT_MAX, "default": v.LIMIT_DEFAULT},
                },
                "AfterId": {
                    "name": "after_id",
                    "in": "query",
                    "required": False,
                    "description": "Return products with an id greater than this one.",
                    "schema": {
                        "type": "integer",
                        "minimum": v.AFTER_ID_MIN,
                        "maximum": v.INT32_MAX,
                        "default": v.AFTER_ID_DEFAULT,
                    },
                },
            },
            "schemas": {
                "ProductInput": {
                    "type": "object",
                    "required": list(v.PRODUCT_FIELDS),
                    "additionalProperties": False,
                    "properties": {
                        "name": {
                            "type": "string",
                            "minLength": v.NAME_MIN_LENGTH,
                            "maxLength": v.NAME_MAX_LENGTH,
                            "pattern": v.NAME_PATTERN,
                        },
                        "price_cents": {"type": "integer", "minimum": v.PRICE_MIN, "maximum": v.PRICE_MAX},
                    },
                },
                "Product": {
                    "type": "object",
                    "required": ["id", "name", "price_cents", "updated_at"],
                    "properties": {
                        "id": {"type": "integer", "minimum": v.ID_MIN, "maximum": v.ID_MAX},
                        "name": {"type": "string"},
                        "price_cents": {"type": "integer", "minimum": v.PRICE_MIN, "maximum": v.PRICE_MAX},
                        "updated_at": {
                            "type": "string",
                            "description": "ISO 8601 timestamp without offset (a TIMESTAMP column).",
                        },
                    },
                },
                "ProductPage": {
                    "type": "object",
                    "required": ["items", "next_after_id"],
                    "properties": {
                        "items": {"type": "array", "items": _ref("schemas", "Product")},
                        "next_after_id": {
                            "type": "integer",
                            "nullable": True,
                            "description": "Pass as after_id for the next page; null on the last page.",
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {"type": "string"},
                        "service": {
                            "type": "string",
                            "enum": ["db-primary", "db-replica"],
                            "description": "The dependency that is unavailable or whose answer was lost (5xx only).",
                        },
                        "outcome": {
                            "type": "string",
                            "enum": ["unknown"],
                            "description": "502 and 504: the write may or may not have been committed.",
                        },
                        "details": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Health": {
                    "type": "object",
                    "required": ["status", "checks", "breakers"],
                    "properties": {
                        "status": {"type": "string", "enum": ["ok", "degraded"]},
                        "checks": {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "required": ["ok"],
                                "properties": {
                                    "ok": {"type": "boolean"},
                                    "latency_ms": {"type": "number"},
                                    "detail": {"type": "string"},
                                    "breaker": {"type": "string", "enum": ["closed", "open", "half-open"]},
                                },
                            },
                        },
                        "breakers": {
                            "type": "object",
                            "additionalProperties": {"type": "string", "enum": ["closed", "open", "half-open"]},
                        },
                    },
                },
            },
            "responses": {
                "BadRequest": _error_response("Malformed id, query parameter or JSON body."),
                "NotFound": _error_response("No such product."),
                "PayloadTooLarge": _error_response(f"The body exceeds {v.MAX_BODY_BYTES} bytes."),
                "UnsupportedMediaType": _error_response("The body is not sent as application/json."),
                "UnprocessableEntity": _error_response("The JSON body does not describe a valid product."),
                "ServiceUnavailable": _error_response(
                    "A database is unavailable (service names which); nothing was written; retry after "
                    "Retry-After seconds.",
                    retry_after=True,
                ),
                "WriteOutcomeUnknown": _error_response(
                    "The write reached the primary, then the connection broke (502) or timed out (504): it may or "
                    "may not have been committed. Read the product back before retrying.",
                    retry_after=True,
                ),
            },
        },
    }
