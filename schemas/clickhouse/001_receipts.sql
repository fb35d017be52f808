-- Receipts: one row per step of a notification (or per chunk, with `count`).
-- Written by the loader from the RECEIPTS stream. Runs on ClickHouse 18.16 and current releases:
-- no DateTime64, no LowCardinality, no query parameters.
-- `receipt_id` is deterministic (request, recipient or chunk, channel, status): a receipt emitted
-- again after a crash, or loaded twice, has the same id. Merges keep one row per id; until they
-- have run, queries count distinct ids (see funnel.sql), which is exact at any moment.
CREATE TABLE IF NOT EXISTS {database}.receipts
(
    receipt_id  String,
    event_time  DateTime,
    event_ms    UInt16,
    event_date  Date DEFAULT toDate(event_time),
    stage       String,
    status      String,
    request_id  String,
    tenant      String,
    tier        String,
    category    String,
    channel     String,
    provider    String,
    user_id     String,
    reason      String,
    attempt     UInt16,
    latency_ms  UInt32,
    count       UInt32
)
ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (tenant, request_id, receipt_id)
