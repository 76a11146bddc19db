"""Fleet simulator: deterministic telemetry of N Identity Server deployments and M CLI installs.

Everything the pipeline must compute can be computed here too: `generate()` is a pure function of
its arguments (`random.Random` seeded from `seed`; the wall clock only matters through `now_ms`
for today's deliveries) and `ground_truth()` derives the expected day aggregates from the exact
deliveries with rules of its own (producers/truth_rules.py: day, version, validity), written from the
documented semantics rather than taken from the processors, so that the two can disagree.

A delivery is `(received_at_ms, key, body)`: the receive time the collector would stamp, the
Kafka key (the body's uid as bytes when it has a string uid, else None) and the raw body.

Senders: `send_to_kafka()` (record timestamp = received_at_ms, the collector's headers) and
`send_to_collector()` (HTTP POST; the collector stamps its own time, so the ground truth of an
HTTP run uses our clock at send time, see docs/simulator.md). For `is-telemetry up`:
`backfill()` (past days straight to Kafka) and `live_feed()` / `LiveFeed` (today's bodies over HTTP).

One module per idea: `deliveries` (the delivery, shared constants), `fleet` (the fleet and its
distributions), `bodies` (bodies built from the fleet, and read back: key, User-Agent), `corruption`
(malformed and inconsistent bodies), `generation` (`generate()`), `truth` (`ground_truth()`), `senders`
(Kafka, collector), `feeds` (backfill, its record per data directory, and the live feed for `is-telemetry up`), `command` (the CLI). The names
below are the simulator's API: the CLI, the stack, the tests and the benches use them from here.
`utc_day` and `version_of` are the oracle's own day and version rules (producers/truth_rules.py; the pipeline's
are processors.snapshot's `day_of` and `major_minor`, each name one function).

See docs/simulator.md for flags, distributions, rates and the ground-truth format.
"""

from producers.simulator.bodies import (
    CLI_USER_AGENT,
    FALLBACK_USER_AGENT,
    build_body,
    changed_object,
    cli_object,
    is_object,
    key_of,
    usage_report,
    user_agent,
    user_agent_of,
)
from producers.simulator.command import (
    command,
)
from producers.simulator.corruption import (
    MALFORMED_KINDS_CLI,
    MALFORMED_KINDS_IS,
    corrupt,
    make_inconsistent,
)
from producers.simulator.deliveries import (
    DAY_MS,
    Delivery,
    Progress,
)
from producers.simulator.feeds import (
    BACKFILL_RECORD,
    LiveFeed,
    backfill,
    live_feed,
    record_backfill,
    recorded_backfill,
)
from producers.simulator.fleet import (
    CLI_USAGE_MIN_MINOR,
    COUNT_CAP,
    OLD_SENDER_MAX_MINOR,
    CliInstall,
    Deployment,
    Fleet,
    build_fleet,
    go_version,
    version_string,
)
from producers.simulator.generation import (
    Simulation,
    day_start_ms,
    generate,
    utc_today,
)
from producers.simulator.senders import (
    SendError,
    SendResult,
    send_to_collector,
    send_to_kafka,
)
from producers.simulator.truth import (
    ground_truth,
    stored_expectation,
    write_ground_truth,
)
from producers.truth_rules import utc_day, version_of

__all__ = [
    "BACKFILL_RECORD",
    "CLI_USAGE_MIN_MINOR",
    "CLI_USER_AGENT",
    "COUNT_CAP",
    "CliInstall",
    "DAY_MS",
    "Delivery",
    "Deployment",
    "FALLBACK_USER_AGENT",
    "Fleet",
    "LiveFeed",
    "MALFORMED_KINDS_CLI",
    "MALFORMED_KINDS_IS",
    "OLD_SENDER_MAX_MINOR",
    "Progress",
    "SendError",
    "SendResult",
    "Simulation",
    "backfill",
    "build_body",
    "build_fleet",
    "changed_object",
    "cli_object",
    "command",
    "corrupt",
    "day_start_ms",
    "generate",
    "go_version",
    "ground_truth",
    "is_object",
    "key_of",
    "live_feed",
    "make_inconsistent",
    "record_backfill",
    "recorded_backfill",
    "send_to_collector",
    "send_to_kafka",
    "stored_expectation",
    "usage_report",
    "user_agent",
    "user_agent_of",
    "utc_day",
    "utc_today",
    "version_of",
    "version_string",
    "write_ground_truth",
]
