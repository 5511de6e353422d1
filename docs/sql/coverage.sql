-- coverage: how much of the catalogue one run recommends, and how evenly.
--
-- The catalogue is the run's own partition of items (items of the same run_date).
--     coverage_at_10 = distinct catalogue items in some user's top 10 / catalogue items
--     coverage_at_k  = the same over all K ranks kept per user
--     gini_at_10     = Gini coefficient of c = how many users' top 10 hold each catalogue
--                      item, items never recommended counted as 0. With c sorted ascending
--                      c_1..c_n:  G = 2 * SUM(i * c_i) / (n * SUM(c_i)) - (n + 1) / n
--                      0: every item recommended equally often; near 1: a few items take all.
-- Recommended items absent from the catalogue are counted in neither.
--
-- Parameters: run_date (DATE).
-- Columns (always one row): run_date, users, k (the greatest rank), catalogue_items,
-- items_at_10, items_at_k, coverage_at_10, coverage_at_k, gini_at_10
-- (ratios NULL when their denominator is 0).
WITH catalogue AS (
    SELECT i.item_id
    FROM items AS i
    WHERE i.run_date = ${run_date}
),
recs AS (
    SELECT r.user_id, r.rank, r.item_id
    FROM recommendations AS r
    WHERE r.run_date = ${run_date}
),
counts AS (
    SELECT c.item_id, COUNT(t.item_id) AS n_recommended
    FROM catalogue AS c
    LEFT JOIN (SELECT item_id FROM recs WHERE rank <= 10) AS t ON t.item_id = c.item_id
    GROUP BY c.item_id
),
ranked AS (
    SELECT n_recommended, ROW_NUMBER() OVER (ORDER BY n_recommended, item_id) AS i
    FROM counts
),
gini AS (
    SELECT
        CAST(2 * SUM(i * n_recommended) AS DOUBLE) / NULLIF(COUNT(*) * SUM(n_recommended), 0)
            - CAST(COUNT(*) + 1 AS DOUBLE) / NULLIF(COUNT(*), 0) AS gini_at_10
    FROM ranked
),
totals AS (
    SELECT
        (SELECT COUNT(DISTINCT user_id) FROM recs) AS users,
        (SELECT MAX(rank) FROM recs) AS k,
        (SELECT COUNT(*) FROM catalogue) AS catalogue_items,
        (SELECT COUNT(*) FROM counts WHERE n_recommended > 0) AS items_at_10,
        (
            SELECT COUNT(DISTINCT r.item_id)
            FROM recs AS r
            JOIN catalogue AS c ON c.item_id = r.item_id
        ) AS items_at_k
)
SELECT
    ${run_date} AS run_date,
    totals.users,
    totals.k,
    totals.catalogue_items,
    totals.items_at_10,
    totals.items_at_k,
    CAST(totals.items_at_10 AS DOUBLE) / NULLIF(totals.catalogue_items, 0) AS coverage_at_10,
    CAST(totals.items_at_k AS DOUBLE) / NULLIF(totals.catalogue_items, 0) AS coverage_at_k,
    gini.gini_at_10
FROM totals
CROSS JOIN gini
