-- The delivery funnel per day, tier, channel and category, on past delivered to seen, read, clicked; `count` makes chunk-level rows weigh their users.
-- Each receipt id counts once (the inner query), however many times it was loaded.
CREATE VIEW IF NOT EXISTS {database}.funnel_daily AS
SELECT
    event_date,
    tier,
    channel,
    category,
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
    sumIf(n, st = 'cancelled')     AS cancelled,
    sumIf(n, st = 'seen')          AS seen,
    sumIf(n, st = 'read')          AS read,
    sumIf(n, st = 'clicked')       AS clicked,
    sumIf(n, st = 'archived')      AS archived
FROM
(
    SELECT any(event_date) AS event_date, any(tier) AS tier, any(channel) AS channel, any(category) AS category, any(status) AS st, any(count) AS n
    FROM {database}.receipts
    GROUP BY receipt_id
)
GROUP BY event_date, tier, channel, category
