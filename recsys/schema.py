"""Column names of the one ratings schema every reader produces."""

USER_COL = "user_id"
ITEM_COL = "item_id"
RATING_COL = "rating"
TIMESTAMP_COL = "timestamp"
RATINGS_COLUMNS = (USER_COL, ITEM_COL, RATING_COL, TIMESTAMP_COL)
