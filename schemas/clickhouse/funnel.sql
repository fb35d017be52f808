-- `herald funnel`: the funnel since a moment, by tier, channel and category; deliveries to sandbox fakes apart.
-- {database} and {since} (unix seconds) are filled in by Herald, which checks they are a name and an integer.
-- Each receipt id counts once (the inner query): a receipt re-emitted after a crash is not a second step.
SELECT
    tier,
    channel,
    category,
    sandbox,
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
    SELECT any(tier) AS tier, any(channel) AS channel, any(category) AS category, any(like(provider, '%-sandbox')) AS sandbox, any(status) AS st, any(count) AS n
    FROM {database}.receipts
    WHERE event_time >= toDateTime({since})
    GROUP BY receipt_id
)
GROUP BY tier, channel, category, sandbox
ORDER BY tier, channel, category, sandbox
