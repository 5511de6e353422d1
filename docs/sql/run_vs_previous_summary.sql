-- run_vs_previous_summary: tonight's run against the previous published run, in one row.
--
-- Tonight is the run of run_date; the previous run is the greatest run_date before it.
-- Per-user overlap as in run_vs_previous.sql, over the users present in both runs.
--
-- Parameters: run_date (DATE).
-- Columns (always one row):
--     run_date, previous_run_date (NULL when there is none),
--     users_tonight, users_compared (in both runs),
--     users_new_tonight (tonight only), users_dropped (previous run only),
--     mean_overlap_at_10, mean_churn_at_10 (NULL when no user is compared).
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
tonight_users AS (
    SELECT DISTINCT user_id FROM tonight
),
previous_users AS (
    SELECT DISTINCT user_id FROM previous
),
compared AS (
    SELECT user_id FROM tonight_users
    INTERSECT
    SELECT user_id FROM previous_users
),
shared AS (
    SELECT t.user_id, COUNT(*) AS n_shared
    FROM tonight AS t
    JOIN previous AS p ON p.user_id = t.user_id AND p.item_id = t.item_id
    GROUP BY t.user_id
),
per_user AS (
    SELECT c.user_id, CAST(COALESCE(s.n_shared, 0) AS DOUBLE) / 10 AS overlap_at_10
    FROM compared AS c
    LEFT JOIN shared AS s ON s.user_id = c.user_id
),
new_users AS (
    SELECT user_id FROM tonight_users
    EXCEPT
    SELECT user_id FROM previous_users
),
dropped_users AS (
    SELECT user_id FROM previous_users
    EXCEPT
    SELECT user_id FROM tonight_users
)
SELECT
    ${run_date} AS run_date,
    (SELECT MAX(run_date) FROM recommendations WHERE run_date < ${run_date}) AS previous_run_date,
    (SELECT COUNT(*) FROM tonight_users) AS users_tonight,
    (SELECT COUNT(*) FROM per_user) AS users_compared,
    (SELECT COUNT(*) FROM new_users) AS users_new_tonight,
    (SELECT COUNT(*) FROM dropped_users) AS users_dropped,
    (SELECT AVG(overlap_at_10) FROM per_user) AS mean_overlap_at_10,
    1 - (SELECT AVG(overlap_at_10) FROM per_user) AS mean_churn_at_10
