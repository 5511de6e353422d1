-- most_recommended: the 20 items in the most users' top 10 on one run, with their titles.
--
-- share_of_users = users whose top 10 holds the item / users with recommendations that run.
-- Ties are broken by item_id (smaller first), so the list is deterministic.
--
-- Parameters: run_date (DATE).
-- Columns: run_date, popularity_rank (1..20), item_id, title (NULL if absent from that run's
-- catalogue), users_recommended, share_of_users.
WITH top10 AS (
    SELECT r.user_id, r.item_id
    FROM recommendations AS r
    WHERE r.run_date = ${run_date} AND r.rank <= 10
),
run_users AS (
    SELECT COUNT(DISTINCT r.user_id) AS n_users
    FROM recommendations AS r
    WHERE r.run_date = ${run_date}
),
counts AS (
    SELECT item_id, COUNT(DISTINCT user_id) AS users_recommended
    FROM top10
    GROUP BY item_id
),
ranked AS (
    SELECT
        item_id,
        users_recommended,
        CAST(ROW_NUMBER() OVER (ORDER BY users_recommended DESC, item_id) AS INT) AS popularity_rank
    FROM counts
)
SELECT
    ${run_date} AS run_date,
    k.popularity_rank,
    k.item_id,
    i.title,
    k.users_recommended,
    CAST(k.users_recommended AS DOUBLE) / u.n_users AS share_of_users
FROM ranked AS k
CROSS JOIN run_users AS u
LEFT JOIN items AS i ON i.run_date = ${run_date} AND i.item_id = k.item_id
WHERE k.popularity_rank <= 20
ORDER BY k.popularity_rank
