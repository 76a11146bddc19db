-- Erasure (docs/privacy.md): the register of every erasure, (uid, erased_at), written by `is-telemetry forget`
-- (sinks/erasure.py) before it removes anything. The roll-up reads it before it counts a batch
-- (processors/erased.py): a record of an erased UID received at or before its erasure (a replay of the raw topic, a
-- late re-send) never becomes a row again; one received after it is a new report and counts. A row is kept per
-- erasure (forgetting again after new reports adds one): the proof that, and when, it happened. `days`: how many
-- days of snapshots it removed.
CREATE TABLE IF NOT EXISTS erasures
(
    uid String,
    erased_at DateTime64(3, 'UTC'),
    days UInt32,
    recorded_at DateTime64(6, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (uid, erased_at)
