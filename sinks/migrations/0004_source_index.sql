-- Many bodies in one Kafka record (is_telemetry/envelope.py): a body's position is (partition, offset, index in the
-- record). The index joins the snapshots' version (receive ms << 64 | offset << 16 | index) and the rejections'
-- identity.
ALTER TABLE snapshots ADD COLUMN IF NOT EXISTS source_index UInt32 AFTER source_offset;

ALTER TABLE rejections
    ADD COLUMN IF NOT EXISTS source_index UInt32 AFTER source_offset,
    MODIFY ORDER BY (day, source_topic, source_partition, source_offset, received_at, source_index);

DROP VIEW IF EXISTS snapshots_latest;

CREATE VIEW IF NOT EXISTS snapshots_latest AS
SELECT * EXCEPT (version) FROM snapshots FINAL
