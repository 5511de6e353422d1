"""Great Expectations suites (JSON, the source of truth for "valid") and the gate that runs them."""
