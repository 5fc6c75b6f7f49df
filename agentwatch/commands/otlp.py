"""The ``otlp`` command: receive OpenTelemetry traces and produce contract events to Kafka."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from pathlib import Path

from agentwatch.commands.options import (
    add_bootstrap_option,
    add_metrics_options,
    at_least_one,
    port,
    topic_name,
)
from agentwatch.errors import first_line
from agentwatch.http_guard import (
    MIN_SECRET_CHARS,
    is_loopback,
    require_secret,
    server_tls_context,
)
from agentwatch.settings import ConfigError, Settings

log = logging.getLogger(__name__)


def register(parser: argparse.ArgumentParser, settings: Settings) -> None:
    parser.description = (
        "An OTLP receiver: GenAI spans from any OpenTelemetry-instrumented agent "
        "(GenAI semantic conventions, OpenInference, OpenLLMetry) are mapped to contract "
        "events and produced to the events topic (acks=all) before the exporter gets its "
        "answer; when Kafka cannot take them the answer is 503 / UNAVAILABLE so the "
        "exporter retries. Spans that do not map are counted and sampled. Settings: "
        "[otlp] in the config file or AGENTWATCH_OTLP_*."
    )
    p = parser
    add_bootstrap_option(p, settings)
    p.add_argument("--topic", type=topic_name, default=settings.value("kafka", "topic"),
                   help="events topic (default %(default)s)")  # fmt: skip
    p.add_argument(
        "--unmapped-topic",
        default=settings.value("otlp", "unmapped_topic"),
        help="topic of unmapped-span samples, landed as otlp_unmapped "
        "(default TOPIC.otlp-unmapped)",
    )
    p.add_argument("--host", default=settings.value("otlp", "host"),
                   help="address the OTLP ports listen on; beyond loopback a bearer token "
                   "is required (default %(default)s)")  # fmt: skip
    p.add_argument("--http-port", type=port, default=settings.value("otlp", "http_port"),
                   help="OTLP/HTTP port, 0 to turn it off (default %(default)s)")  # fmt: skip
    p.add_argument("--grpc-port", type=port, default=settings.value("otlp", "grpc_port"),
                   help="OTLP/gRPC port, 0 to turn it off (default %(default)s)")  # fmt: skip
    p.add_argument(
        "--http-workers",
        type=at_least_one,
        metavar="N",
        default=settings.value("otlp", "http_workers"),
        help="OTLP/HTTP connections served at once, each by a thread (an exporter keeps its "
        "connection between exports; one more is answered 503 and retries) "
        "(default %(default)s)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=at_least_one,
        default=settings.value("otlp", "max_body_bytes"),
        help="larger requests (also once inflated) are refused with 413 (default %(default)s)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=_path(settings.value("otlp", "token_file")),
        help="file holding the bearer token exporters must send, at least "
        f"{MIN_SECRET_CHARS} characters (env AGENTWATCH_OTLP_TOKEN gives it directly; "
        "default: none required on loopback, and --host beyond loopback refuses to start "
        "without one)",
    )
    p.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond loopback without a bearer token: anyone who reaches the ports "
        "can send spans (default: refuse to start)",
    )
    p.add_argument("--tls-cert", type=Path, default=_path(settings.value("otlp", "tls_cert")),
                   help="PEM certificate: serve HTTPS and gRPC over TLS")  # fmt: skip
    p.add_argument("--tls-key", type=Path, default=_path(settings.value("otlp", "tls_key")),
                   help="PEM private key of --tls-cert")  # fmt: skip
    p.add_argument(
        "--keep-content",
        action=argparse.BooleanOptionalAction,
        default=settings.value("otlp", "keep_content"),
        help="keep message content (prompts, completions, tool arguments and results), "
        "redacted, in the events' attributes (default: dropped)",
    )
    add_metrics_options(p, settings, "otlp", "the receiver's metrics")
    p.set_defaults(handler=_run, token=settings.value("otlp", "token"))


def _path(value: str) -> Path | None:
    return Path(value) if value else None


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        try:
            text: str = args.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {args.token_file}: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"--token-file {args.token_file}: the file is empty")
        require_secret(text, f"--token-file {args.token_file}")
        return text
    token: str = args.token
    if token:
        require_secret(token, "[otlp] token (AGENTWATCH_OTLP_TOKEN)")
    return token or None


def _tls(args: argparse.Namespace) -> tuple[Path, Path] | None:
    """The certificate and key, checked to load as a pair (ConfigError otherwise)."""
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if args.tls_cert is None:
        return None
    for path in (args.tls_cert, args.tls_key):
        if not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")
    server_tls_context(args.tls_cert, args.tls_key)
    return (args.tls_cert, args.tls_key)


def _check_exposure(args: argparse.Namespace, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token, unless told to."""
    if token is not None or is_loopback(args.host):
        return
    if not args.allow_unauthenticated:
        raise ConfigError(
            f"--host {args.host} is beyond loopback and no bearer token is configured: "
            "give --token-file (or AGENTWATCH_OTLP_TOKEN), or --allow-unauthenticated to "
            "accept spans from anyone who reaches the ports"
        )
    log.warning("no bearer token: anyone who reaches this port can send spans")


def _tune_gc() -> None:
    """A request allocates thousands of short-lived containers that reference counting
    frees; collecting every 700 allocations took about 6% of the receiver's CPU in
    bench.otlp. Collect less often, and keep the startup heap out of full collections."""
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


def _run(args: argparse.Namespace) -> int:
    from kafka.errors import KafkaError
    from prometheus_client import CollectorRegistry, start_http_server

    from agentwatch.ingest.otlp import grpc as otlp_grpc
    from agentwatch.ingest.otlp.http import OtlpHttpServer
    from agentwatch.ingest.otlp.kafka_sink import KafkaSink
    from agentwatch.ingest.otlp.mapping import MappingConfig
    from agentwatch.ingest.otlp.metrics import OtlpMetrics
    from agentwatch.ingest.otlp.receiver import UNMAPPED_SUFFIX, Receiver
    from agentwatch.logs import quiet_library_logs
    from agentwatch.processors.landing.faults import EXIT_KAFKA
    from agentwatch.topics import TopicError, TopicSpec, ensure_topics

    token, tls = _token(args), _tls(args)
    if args.http_port == 0 and args.grpc_port == 0:
        raise ConfigError("--http-port and --grpc-port are both 0: nothing to serve")
    _check_exposure(args, token)
    unmapped_topic = args.unmapped_topic or f"{args.topic}{UNMAPPED_SUFFIX}"
    try:
        with quiet_library_logs():
            ensure_topics(args.bootstrap, [TopicSpec(args.topic), TopicSpec(unmapped_topic)])
            sink = KafkaSink(args.bootstrap, args.topic, unmapped_topic)
    except (KafkaError, TopicError) as exc:  # one line and EXIT_KAFKA, as `process` ends
        problem = first_line(exc)
        if not isinstance(exc, TopicError):
            problem = f"cannot reach Kafka at {args.bootstrap}: {type(exc).__name__}: {problem}"
        print(
            f"agentwatch: {problem} (check --bootstrap and the [kafka] settings)", file=sys.stderr
        )
        return EXIT_KAFKA
    registry = CollectorRegistry()
    receiver = Receiver(sink, MappingConfig(keep_content=args.keep_content), OtlpMetrics(registry))
    _tune_gc()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    http = grpc_server = metrics = None
    try:
        if args.http_port:
            try:
                http = OtlpHttpServer(
                    (args.host, args.http_port),
                    receiver,
                    args.max_body_bytes,
                    token,
                    tls,
                    workers=args.http_workers,
                )
            except OSError as exc:
                raise ConfigError(
                    f"cannot listen on {args.host}:{args.http_port}: {exc.strerror or exc}"
                ) from None
            http.serve_in_thread()
        if args.grpc_port:
            grpc_server, _ = otlp_grpc.serve(
                args.host, args.grpc_port, receiver, args.max_body_bytes, token, tls
            )
        if args.metrics_port is not None:
            metrics, _ = start_http_server(args.metrics_port, args.metrics_host, registry)
        log.info(
            "otlp receiver started",
            extra={"http_port": args.http_port, "grpc_port": args.grpc_port,
                   "topic": args.topic, "tls": tls is not None, "token": token is not None},
        )  # fmt: skip
        stop.wait()
    finally:
        if http is not None:
            http.shutdown()
            http.server_close()
        if grpc_server is not None:
            grpc_server.stop(grace=5).wait()
        if metrics is not None:
            metrics.shutdown()
        receiver.sink.close()
    log.info("otlp receiver stopped")
    return 0
