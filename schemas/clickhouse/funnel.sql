-- `herald funnel`: the funnel since a moment, by tier and channel; deliveries to sandbox fakes apart.
-- {database} and {since} (unix seconds) are filled in by Herald, which checks they are a name and an integer.
SELECT
    tier,
    channel,
    like(provider, '%-sandbox') AS sandbox,
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
WHERE event_time >= toDateTime({since})
GROUP BY tier, channel, sandbox
ORDER BY tier, channel, sandbox
