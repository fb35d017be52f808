-- The delivery funnel per day, tier and channel; `count` makes chunk-level rows weigh their users.
-- Each receipt id counts once (the inner query), however many times it was loaded.
CREATE VIEW IF NOT EXISTS {database}.funnel_daily AS
SELECT
    event_date,
    tier,
    channel,
    sumIf(n, st = 'accepted')      AS accepted,
    sumIf(n, st = 'rejected')      AS rejected,
    sumIf(n, st = 'resolved')      AS resolved,
    sumIf(n, st = 'suppressed')    AS suppressed,
    sumIf(n, st = 'deferred')      AS deferred,
    sumIf(n, st = 'dispatched')    AS dispatched,
    sumIf(n, st = 'delivered')     AS delivered,
    sumIf(n, st = 'deduplicated')  AS deduplicated,
    sumIf(n, st = 'failed')        AS failed,
    sumIf(n, st = 'dead_lettered') AS dead_lettered,
    sumIf(n, st = 'expired')       AS expired,
    sumIf(n, st = 'cancelled')     AS cancelled
FROM
(
    SELECT any(event_date) AS event_date, any(tier) AS tier, any(channel) AS channel, any(status) AS st, any(count) AS n
    FROM {database}.receipts
    GROUP BY receipt_id
)
GROUP BY event_date, tier, channel
