#!/usr/bin/env python3
"""Stand-in for Jaeger (all-in-one): receives OTLP traces on Jaeger's ports,
keeps them in memory, and answers the part of Jaeger's query API that reads
them back, in Jaeger's JSON shapes:

  4317  OTLP/gRPC  opentelemetry.proto.collector.trace.v1.TraceService/Export
  4318  OTLP/HTTP  POST /v1/traces (application/x-protobuf, gzip or not)
  16686 GET /api/services                          service names seen
        GET /api/traces?service=NAME[&limit=N]     whole traces holding a span of NAME, newest first
        GET /api/traces/TRACE_ID                   one trace
        GET /                                      a plain-text summary

The gRPC server is python3-grpcio's, given the request bytes as they come;
the few OTLP fields Jaeger shows are read by the small protobuf decoder below
(the message layouts of opentelemetry-proto v1), so nothing but Debian's
python3-grpcio is needed.
"""

import gzip
import json
import signal
import struct
import sys
import threading
from collections import OrderedDict
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import grpc

MAX_SPANS = 500_000  # the oldest traces are forgotten beyond this

traces = OrderedDict()  # trace id (hex) -> list of (service name, span), by last arrival
span_count = 0
lock = threading.Lock()


# --- protobuf wire format ------------------------------------------------------


def varint(buf, i):
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def fields(buf):
    """(field number, value) pairs: int for varint and fixed, bytes for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = varint(buf, i)
        elif wire == 1:
            value, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif wire == 2:
            length, i = varint(buf, i)
            value, i = bytes(buf[i : i + length]), i + length
        elif wire == 5:
            value, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {i}")
        yield number, value


def any_value(buf):
    """An OTLP AnyValue as a Jaeger tag's (type, value)."""
    for number, value in fields(buf):
        if number == 1:
            return "string", value.decode("utf-8", "replace")
        if number == 2:
            return "bool", bool(value)
        if number == 3:
            return "int64", value - (1 << 64) if value >= 1 << 63 else value
        if number == 4:
            return "float64", struct.unpack("<d", value.to_bytes(8, "little"))[0]
        if number in (5, 6):  # array, key-value list
            return "string", json.dumps([any_value(v)[1] for _, v in fields(value)])
        if number == 7:
            return "binary", value.hex()
    return "string", ""


def key_value(buf):
    key, kind, value = "", "string", ""
    for number, field in fields(buf):
        if number == 1:
            key = field.decode()
        elif number == 2:
            kind, value = any_value(field)
    return {"key": key, "type": kind, "value": value}


SPAN_KINDS = {1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def span(buf):
    """An OTLP Span as a Jaeger span (without processID)."""
    out = {"references": [], "tags": [], "logs": [], "flags": 1, "warnings": None}
    start = end = 0
    for number, value in fields(buf):
        if number == 1:
            out["traceID"] = value.hex()
        elif number == 2:
            out["spanID"] = value.hex()
        elif number == 4 and value:
            out["references"].append({"refType": "CHILD_OF", "spanID": value.hex()})
        elif number == 5:
            out["operationName"] = value.decode("utf-8", "replace")
        elif number == 6 and value in SPAN_KINDS:
            out["tags"].append({"key": "span.kind", "type": "string", "value": SPAN_KINDS[value]})
        elif number == 7:
            start = value
        elif number == 8:
            end = value
        elif number == 9:
            out["tags"].append(key_value(value))
        elif number == 11:
            log = {"timestamp": 0, "fields": []}
            for n, v in fields(value):
                if n == 1:
                    log["timestamp"] = v // 1000
                elif n == 2:
                    log["fields"].insert(0, {"key": "event", "type": "string", "value": v.decode()})
                elif n == 3:
                    log["fields"].append(key_value(v))
            out["logs"].append(log)
        elif number == 15:
            for n, v in fields(value):
                if n == 3 and v == 2:  # STATUS_CODE_ERROR
                    out["tags"].append({"key": "error", "type": "bool", "value": True})
    for reference in out["references"]:
        reference["traceID"] = out.get("traceID", "")
    out["startTime"] = start // 1000
    out["duration"] = max(end - start, 0) // 1000
    return out


def export_request(buf):
    """(service name, span) for each span of an ExportTraceServiceRequest."""
    for number, resource_spans in fields(buf):
        if number != 1:
            continue
        service, spans = "unknown_service", []
        for n, value in fields(resource_spans):
            if n == 1:  # Resource
                for m, attribute in fields(value):
                    if m == 1:
                        tag = key_value(attribute)
                        if tag["key"] == "service.name":
                            service = tag["value"]
            elif n == 2:  # ScopeSpans
                spans.extend(span(v) for m, v in fields(value) if m == 2)
        for s in spans:
            yield service, s


def receive(buf):
    global span_count
    received = list(export_request(buf))
    with lock:
        for service, s in received:
            trace = traces.setdefault(s["traceID"], [])
            trace.append((service, s))
            traces.move_to_end(s["traceID"])
        span_count += len(received)
        while span_count > MAX_SPANS and traces:
            _, dropped = traces.popitem(last=False)
            span_count -= len(dropped)


# --- the receivers ---------------------------------------------------------------


def grpc_export(request, context):
    receive(request)
    return b""  # an empty ExportTraceServiceResponse


class Http(BaseHTTPRequestHandler):
    def answer(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        if urlparse(self.path).path != "/v1/traces":
            self.answer(404, b"not found", "text/plain")
            return
        if not self.headers.get("Content-Type", "").startswith("application/x-protobuf"):
            self.answer(415, b"only application/x-protobuf", "text/plain")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        receive(body)
        self.answer(200, b"", "application/x-protobuf")

    def do_GET(self):
        url = urlparse(self.path)
        with lock:
            snapshot = [(tid, list(spans)) for tid, spans in reversed(traces.items())]
        if url.path == "/api/services":
            services = sorted({service for _, spans in snapshot for service, _ in spans})
            self.answer(200, {"data": services, "total": len(services)})
        elif url.path == "/api/traces":
            query = parse_qs(url.query)
            service = query.get("service", [""])[0]
            limit = int(query.get("limit", ["20"])[0])
            found = [jaeger_trace(tid, spans) for tid, spans in snapshot if any(s == service for s, _ in spans)]
            self.answer(200, {"data": found[:limit], "total": 0, "limit": 0, "offset": 0, "errors": None})
        elif url.path.startswith("/api/traces/"):
            wanted = url.path.rsplit("/", 1)[1].lower()
            found = [jaeger_trace(tid, spans) for tid, spans in snapshot if tid == wanted]
            if found:
                self.answer(200, {"data": found, "errors": None})
            else:
                self.answer(404, {"data": None, "errors": [{"code": 404, "msg": "trace not found"}]})
        elif url.path == "/":
            counts = {}
            for _, spans in snapshot:
                for service, _ in spans:
                    counts[service] = counts.get(service, 0) + 1
            lines = "".join(f"{service}: {n} spans\n" for service, n in sorted(counts.items()))
            self.answer(200, f"{len(snapshot)} traces\n{lines}".encode(), "text/plain")
        else:
            self.answer(404, b"not found", "text/plain")

    def log_message(self, format, *args):
        pass


def jaeger_trace(trace_id, spans):
    processes, spans_out = {}, []
    for service, s in spans:
        pid = processes.setdefault(service, f"p{len(processes) + 1}")
        spans_out.append({**s, "processID": pid})
    return {
        "traceID": trace_id,
        "spans": spans_out,
        "processes": {pid: {"serviceName": service, "tags": []} for service, pid in processes.items()},
        "warnings": None,
    }


def main():
    # PID 1 of its container: stop at `docker stop`.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    handler = grpc.method_handlers_generic_handler(
        "opentelemetry.proto.collector.trace.v1.TraceService",
        {"Export": grpc.unary_unary_rpc_method_handler(grpc_export)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("0.0.0.0:4317")
    server.start()
    for port in (4318, 16686):
        http = ThreadingHTTPServer(("0.0.0.0", port), Http)
        threading.Thread(target=http.serve_forever, daemon=True).start()
    print("jaeger stand-in: OTLP gRPC on :4317, OTLP HTTP on :4318, query API on :16686", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    sys.exit(main())
