-- ratings_as_of: one user's ratings as they stood on a date, from the versioned ratings_silver.
--
-- ratings_silver is not copied every night: a row is a version of one (user_id, item_id),
-- valid from the date of the drop that changed it (docs/timeline.md). The state as of a date
-- is each key's latest version with valid_from <= that date. This query is that rule, the
-- one recsys.asof applies for the pipeline, training and scoring; sessions and sequences are
-- read the same way with the key user_id.
--
-- Parameters: ${user_id}, ${as_of} (a date).
-- Columns: the user's ratings as of that date, oldest first, with the number of clean lines
-- each stands for (copies) and the date of its version.
SELECT
    s.user_id,
    s.item_id,
    s.rating,
    s.timestamp,
    s.copies,
    s.valid_from
FROM ratings_silver AS s
INNER JOIN (
    SELECT
        user_id,
        item_id,
        MAX(valid_from) AS valid_from
    FROM ratings_silver
    WHERE valid_from <= ${as_of} AND user_id = ${user_id}
    GROUP BY user_id, item_id
) AS latest
    ON s.user_id = latest.user_id AND s.item_id = latest.item_id AND s.valid_from = latest.valid_from
ORDER BY s.timestamp, s.item_id
