-- latest_run: the latest published run of the recommendations table.
--
-- "The latest published run" is the partition with the greatest run_date in
-- recommendations. Publishing is gated and atomic (each night's partition is replaced in
-- one Delta commit, and only after its gate passed), so every partition present is a
-- published run and the greatest run_date is the current one.
--
-- The predicate below is the building block the other queries reuse, verbatim:
--     r.run_date = (SELECT MAX(run_date) FROM recommendations)
--
-- Parameters: none. Usable as a view body:
--     CREATE OR REPLACE TEMPORARY VIEW latest_recommendations AS <this file>
-- Columns: every column of recommendations, one row per (user_id, rank).
SELECT
    r.run_date,
    r.model_version,
    r.user_id,
    r.rank,
    r.item_id,
    r.score,
    r.is_fallback,
    r.generated_at
FROM recommendations AS r
WHERE r.run_date = (SELECT MAX(run_date) FROM recommendations)
