-- user_top10: one user's current top 10, with the titles, years and genres of the catalogue
-- of the same run (items of the same run_date).
--
-- Current = the latest published run (the predicate of latest_run.sql). A user absent from
-- that run gets no rows, even if an older run recommended to them.
--
-- Parameters: user_id (BIGINT).
-- Columns: run_date, model_version, user_id, rank (1..10), item_id, title, year, genres,
-- score, is_fallback (true: the popularity fallback, the user had no usable history).
-- An item missing from that run's catalogue keeps its row, with NULL title, year and genres.
SELECT
    r.run_date,
    r.model_version,
    r.user_id,
    r.rank,
    r.item_id,
    i.title,
    i.year,
    i.genres,
    r.score,
    r.is_fallback
FROM recommendations AS r
LEFT JOIN items AS i
    ON i.run_date = r.run_date AND i.item_id = r.item_id
WHERE r.run_date = (SELECT MAX(run_date) FROM recommendations)
    AND r.user_id = ${user_id}
    AND r.rank <= 10
ORDER BY r.rank
