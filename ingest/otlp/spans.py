"""OTLP trace requests, from the wire to flat spans the mapping reads.

Both encodings of OTLP/HTTP (protobuf and JSON) and the Collector's ``otlp_proto``
Kafka records decode to the same ``ExportTraceServiceRequest``; ``flatten`` then turns
it into plain ``Span`` values (hex ids, Python attribute values), so the mapping is a
pure function of data that tests can also build by hand.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

STATUS_ERROR: Final = 2


class RequestError(ValueError):
    """A request body that is not an OTLP trace export (answered with 400)."""


@dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    time_ns: int
    attributes: dict[str, Any]


@dataclass(slots=True)
class Span:
    """One span with its resource and instrumentation scope, ids in lowercase hex."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status_code: int = 0
    status_message: str = ""
    events: list[SpanEvent] = field(default_factory=list)


class TooLarge(RequestError):
    """A body over the configured limit, compressed or once decompressed (answered 413)."""


def decompress(body: bytes, encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` gzip or deflate, refusing to inflate past ``max_bytes``."""
    enc = (encoding or "identity").strip().lower()
    if enc in ("identity", ""):
        return body
    if enc not in ("gzip", "deflate"):
        raise RequestError(f"unsupported Content-Encoding {encoding!r} (use gzip or none)")
    inflater = zlib.decompressobj(wbits=31 if enc == "gzip" else 15)
    try:
        data = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise RequestError(f"the body is not valid {enc} data: {exc}") from None
    if len(data) > max_bytes:
        raise TooLarge(f"the body inflates past the {max_bytes}-byte limit")
    if not inflater.eof:
        raise RequestError(f"the body is truncated {enc} data")
    return data


def parse_protobuf(body: bytes) -> ExportTraceServiceRequest:
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise RequestError(f"the body is not an ExportTraceServiceRequest: {exc}") from None
    except RecursionError:
        raise RequestError("the body is an ExportTraceServiceRequest nested too deeply") from None
    return request


_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


def parse_json(body: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: protobuf's JSON mapping, except that ids are hex, not base64."""
    from google.protobuf.json_format import ParseDict, ParseError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise RequestError("the body is JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise RequestError("the body is not a JSON object")
    try:
        for rs in doc.get("resourceSpans") or doc.get("resource_spans") or []:
            for ss in rs.get("scopeSpans") or rs.get("scope_spans") or []:
                for span in ss.get("spans") or []:
                    _hex_ids_to_base64(span)
                    for link in span.get("links") or []:
                        _hex_ids_to_base64(link)
    except (AttributeError, TypeError):  # a list or a number where an object belongs
        raise RequestError("the body is not an OTLP/JSON trace export") from None
    request = ExportTraceServiceRequest()
    try:
        ParseDict(doc, request, ignore_unknown_fields=True)
    except (ParseError, ValueError, TypeError) as exc:
        raise RequestError(f"the body is not an OTLP/JSON trace export: {exc}") from None
    except RecursionError:
        raise RequestError("the body is an OTLP/JSON trace export nested too deeply") from None
    return request


def _hex_ids_to_base64(obj: dict[str, Any]) -> None:
    for key in _ID_FIELDS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            try:
                obj[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise RequestError(f"{key} {value!r} is not a hex id") from None


def flatten(request: ExportTraceServiceRequest) -> list[Span]:
    """Every span of the request with its resource attributes and scope name."""
    spans: list[Span] = []
    append = spans.append
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name or "unknown"
            for s in ss.spans:
                parent = s.parent_span_id
                status = s.status
                events = (
                    [SpanEvent(e.name, e.time_unix_nano, attributes(e.attributes)) for e in ev]
                    if (ev := s.events)
                    else []
                )
                append(
                    Span(
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        parent.hex() if parent else None,
                        s.name,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        attributes(s.attributes),
                        resource,
                        scope,
                        status.code,
                        status.message,
                        events,
                    )
                )
    return spans


_SCALARS: Final = frozenset({"string_value", "int_value", "double_value", "bool_value"})


def attributes(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = value.string_value
        else:
            out[kv.key] = getattr(value, which) if which in _SCALARS else any_value(value)
    return out


def any_value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return attributes(v.kvlist_value.values)
    if which == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, which)
