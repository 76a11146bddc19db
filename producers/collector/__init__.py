"""The HTTP collector: what The Things Stack's `telemetry.target` points at (`is-telemetry collect`).

`POST /collect` takes the body exactly as TTS sends it (compact JSON, `Content-Type: application/json`),
stamps the receive time, and publishes the raw bytes unchanged to the raw topic (`kafka.raw_topic`),
keyed by the message's `uid`. It answers `202 {"status":"accepted"}` only once Kafka acknowledged the
record (acks=all); anything else is a one-line JSON error. Validation beyond "is it JSON" is the
processors' job. Per client (producers/client_limits.py): a request past its client's request or body-byte
budget is answered 429 with Retry-After and not stored (flood control); a body with a new UID past its client's
budget for the day is answered 202 like any other and published marked `rate_limited`: the processors reject it as
such. See docs/collector.md for the contract, metrics and measured figures.

One module per idea:
- `app`: the ASGI app (endpoints, errors) and `up`'s commands;
- `publisher`: the Kafka producer, batches, acknowledgements, readiness, switching the raw topic's generation;
- `producer_settings`: the producer's timeouts and settings, from the configuration;
- `metrics`: the Prometheus metrics and the middleware counting requests;
- `server`: uvicorn with the HTTP edge's bounds and a graceful stop.

    create_app(settings, producer=None) -> Starlette   # the ASGI app (producer injectable for tests)
    serve(settings, log_level="warning")               # uvicorn with graceful shutdown
"""

from producers.collector.app import COLLECT_PATH, create_app
from producers.collector.metrics import Metrics
from producers.collector.publisher import Publisher
from producers.collector.server import CollectorServer, make_config, serve

__all__ = ["COLLECT_PATH", "CollectorServer", "Metrics", "Publisher", "create_app", "make_config", "serve"]
