-- run_vs_previous: per user, how much of tonight's top 10 the previous published run
-- already recommended.
--
-- Tonight is the run of run_date; the previous run is the greatest run_date before it.
-- For each user present in both runs:
--     overlap_at_10 = |top 10 tonight ∩ top 10 previous| / 10
--     churn_at_10   = 1 - overlap_at_10
-- Users in only one of the two runs are left out (see run_vs_previous_summary.sql for their
-- counts). No rows when there is no previous run.
--
-- Parameters: run_date (DATE).
-- Columns: run_date, previous_run_date, user_id, shared_at_10 (items in both top 10s),
-- overlap_at_10, churn_at_10.
WITH tonight AS (
    SELECT r.user_id, r.item_id
    FROM recommendations AS r
    WHERE r.run_date = ${run_date} AND r.rank <= 10
),
previous AS (
    SELECT r.user_id, r.item_id
    FROM recommendations AS r
    WHERE r.run_date = (SELECT MAX(run_date) FROM recommendations WHERE run_date < ${run_date})
        AND r.rank <= 10
),
compared AS (
    SELECT user_id FROM tonight
    INTERSECT
    SELECT user_id FROM previous
),
shared AS (
    SELECT t.user_id, COUNT(*) AS n_shared
    FROM tonight AS t
    JOIN previous AS p ON p.user_id = t.user_id AND p.item_id = t.item_id
    GROUP BY t.user_id
),
runs AS (
    SELECT
        ${run_date} AS run_date,
        (SELECT MAX(run_date) FROM recommendations WHERE run_date < ${run_date}) AS previous_run_date
)
SELECT
    runs.run_date,
    runs.previous_run_date,
    c.user_id,
    COALESCE(s.n_shared, 0) AS shared_at_10,
    CAST(COALESCE(s.n_shared, 0) AS DOUBLE) / 10 AS overlap_at_10,
    1 - CAST(COALESCE(s.n_shared, 0) AS DOUBLE) / 10 AS churn_at_10
FROM compared AS c
CROSS JOIN runs
LEFT JOIN shared AS s ON s.user_id = c.user_id
ORDER BY c.user_id
