"""Property-based (hypothesis): ingest and the local reader on random mixes of good and malformed
lines, in every native format.

For each generated file, ingest's JVM parse (the exact line numbering and the parse) must:
- give every data line exactly one bronze row, at its exact line number (nothing lost or added);
- tag exactly the malformed lines, each with the reason of its malformed field (line-exact quarantine);
- type the good lines to the generated values;
so that good + quarantined = lines read (the accounting identity). The local reader must agree:
the same rows for a clean file, and for a file with a malformed line an error naming the first one.

``make test`` runs a fixed, derandomized number of examples; ``HYPOTHESIS_PROFILE=thorough``
runs many more.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys.datasets.formats import FORMATS, RatingsFormatError, read_ratings
from spark_jobs import ingest

pytestmark = pytest.mark.spark

settings.register_profile(
    "default", max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

NAMES = {"u.data": "u.data", "ratings.dat": "ratings.dat", "ratings.csv": "r.csv", "recbole-inter": "r.inter"}
# A malformed value per field, and the reason ingest gives a line whose only fault it is.
BAD_FIELDS = {
    0: [
        ("", "missing_user_id"),
        ("u7", "non_integer_user_id"),
        ("99999999999999999999", "user_id_out_of_range"),
    ],
    1: [
        ("", "missing_item_id"),
        ("1.5", "non_integer_item_id"),
        ("-99999999999999999999", "item_id_out_of_range"),
    ],
    2: [("", "missing_rating"), ("great", "unparseable_rating"), ("NaN", "unparseable_rating")],
    3: [("", "missing_timestamp"), ("yesterday", "unparseable_timestamp"), ("10.5", "unparseable_timestamp")],
}

good_values = st.tuples(
    st.integers(1, 2**40),
    st.integers(1, 2**40),
    st.integers(1, 10).map(lambda n: n / 2),
    st.integers(788_918_400, 2_000_000_000),
)


@st.composite
def lines(draw, separator: str):
    """(bytes of one line, its values or None, the reason ingest gives it or None)."""
    values = draw(good_values)
    fields = [str(values[0]), str(values[1]), f"{values[2]:g}", str(values[3])]
    kind = draw(st.sampled_from(["good", "good", "good", "field", "count", "empty", "encoding"]))
    if kind == "good":
        return separator.join(fields).encode(), values, None
    if kind == "field":
        index = draw(st.integers(0, 3))
        token, reason = draw(st.sampled_from(BAD_FIELDS[index]))
        fields[index] = token
        return separator.join(fields).encode(), None, reason
    if kind == "count":
        cut = draw(st.sampled_from([fields[:3], [*fields, "9"], fields[:1]]))
        return separator.join(cut).encode(), None, "wrong_field_count"
    if kind == "empty":
        return draw(st.sampled_from([b"", b"  "])), None, "empty_line"
    return separator.join(fields).encode() + b"\xe9", None, "bad_encoding"


@pytest.mark.parametrize("format_name", sorted(FORMATS))
@given(data=st.data())
def test_ingest_keeps_every_line_and_quarantines_exactly_the_malformed_ones(spark, format_name, data):
    fmt = FORMATS[format_name]
    body = data.draw(st.lists(lines(fmt.separator), min_size=1, max_size=25), label="lines")
    first = 1 + fmt.n_header_lines  # the line number of the first data line
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / NAMES[fmt.name]
        header = [fmt.separator.join(fmt.header).encode()] if fmt.header else []
        path.write_bytes(b"\n".join([*header, *(text for text, _, _ in body)]) + b"\n")
        headers: dict[str, str] = {}
        counts: dict[str, int] = {}
        read = ingest.read_lines(spark, [str(path)], counts, headers if fmt.header else None)
        rows = {r["line_number"]: r for r in ingest.parse_lines(read, fmt, headers).collect()}

        assert sorted(rows) == list(range(first, first + len(body)))  # every line, once, in place
        assert sum(counts.values()) - fmt.n_header_lines == len(body)
        for number, (_, values, reason) in enumerate(body, start=first):
            row = rows[number]
            assert row["parse_error"] == reason, (number, row["raw"])
            typed = (row["user_id"], row["item_id"], row["rating"], row["timestamp"])
            assert typed == (values if reason is None else (None, None, None, None))
        good = sum(reason is None for _, _, reason in body)
        quarantined = sum(row["parse_error"] is not None for row in rows.values())
        assert good + quarantined == len(rows) == len(body)

        bad = [number for number, (_, _, reason) in enumerate(body, start=first) if reason is not None]
        if bad:
            with pytest.raises(RatingsFormatError) as failure:
                read_ratings(path, fmt)
            assert failure.value.line == bad[0]
        else:
            local = read_ratings(path, fmt)
            assert [tuple(r) for r in local.itertuples(index=False)] == [values for _, values, _ in body]
