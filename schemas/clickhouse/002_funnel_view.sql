-- The delivery funnel per day, tier and channel; `count` makes chunk-level rows weigh their users.
CREATE VIEW IF NOT EXISTS {database}.funnel_daily AS
SELECT
    event_date,
    tier,
    channel,
    sumIf(count, status = 'accepted')      AS accepted,
    sumIf(count, status = 'rejected')      AS rejected,
    sumIf(count, status = 'resolved')      AS resolved,
    sumIf(count, status = 'suppressed')    AS suppressed,
    sumIf(count, status = 'deferred')      AS deferred,
    sumIf(count, status = 'dispatched')    AS dispatched,
    sumIf(count, status = 'delivered')     AS delivered,
    sumIf(count, status = 'deduplicated')  AS deduplicated,
    sumIf(count, status = 'failed')        AS failed,
    sumIf(count, status = 'dead_lettered') AS dead_lettered,
    sumIf(count, status = 'expired')       AS expired,
    sumIf(count, status = 'cancelled')     AS cancelled
FROM {database}.receipts
GROUP BY event_date, tier, channel
