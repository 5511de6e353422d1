"""Column names of the pipeline tables, beyond the ratings schema of :mod:`recsys.schema`."""

from recsys.asof import VALID_FROM_COL
from recsys.delta import RUN_DATE_COL
from recsys.schema import ITEM_COL, RATING_COL, RATINGS_COLUMNS, TIMESTAMP_COL, USER_COL

__all__ = [
    "DROP_DATE_COL",
    "DROP_MONTH_COL",
    "EVENT_ORDER",
    "GAP_COL",
    "ITEMS_COL",
    "ITEM_COL",
    "LINE_NUMBER_COL",
    "N_EVENTS_COL",
    "PARSE_ERROR_COL",
    "POSITION_COL",
    "QUARANTINED_COL",
    "RATINGS_COLUMNS",
    "RATING_COL",
    "RAW_COL",
    "REASON_COL",
    "RUN_DATE_COL",
    "SESSION_IDS_COL",
    "SESSION_ID_COL",
    "SESSION_POSITION_COL",
    "SOURCE_FILE_COL",
    "SOURCE_HEADER_COL",
    "SPLIT_COL",
    "STAGE_COL",
    "TIMESTAMPS_COL",
    "TIMESTAMP_COL",
    "TIME_GAPS_COL",
    "USER_COL",
    "VALID_FROM_COL",
]

# ratings_bronze, ratings_quarantine, the ingest ledger: the date of the drop a line arrived in
DROP_DATE_COL = "drop_date"
# ratings_bronze's partition: the first day of the drop's month. A night of a hundred daily drops
# writes a file per month, not one per drop (Spark's per-file cost is most of a small night's write).
DROP_MONTH_COL = "drop_month"

# ratings_bronze: where a line came from, what it said, and why it could not be parsed
SOURCE_FILE_COL = "source_file"
LINE_NUMBER_COL = "line_number"
RAW_COL = "raw"
SOURCE_HEADER_COL = "source_header"
PARSE_ERROR_COL = "parse_error"

#: The order of a user's events in sessions, sequences and the RecBole export: by time, and
#: equal timestamps (several ratings submitted in the same second are common in MovieLens) in
#: the order they were recorded, i.e. file order (``source_file``, then ``line_number``). This
#: is RecBole's rule too (a stable sort by time over the file), so leave-one-out picks the same
#: validation and test items as RecBole's reference models on the same file.
EVENT_ORDER = (TIMESTAMP_COL, SOURCE_FILE_COL, LINE_NUMBER_COL)

# ratings_quarantine, and the gate's tagged frame
REASON_COL = "reason"
STAGE_COL = "stage"
QUARANTINED_COL = "is_quarantined"

# sessions (one row per event)
SESSION_ID_COL = "session_id"
POSITION_COL = "position"
SESSION_POSITION_COL = "session_position"
GAP_COL = "gap_seconds"

# sequences (one row per user)
ITEMS_COL = "item_ids"
TIMESTAMPS_COL = "timestamps"
TIME_GAPS_COL = "time_gaps"
SESSION_IDS_COL = "session_ids"
SPLIT_COL = "split"
N_EVENTS_COL = "n_events"
