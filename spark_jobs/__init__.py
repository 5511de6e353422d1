"""PySpark jobs of the nightly ratings pipeline.

ingest -> gate (expectations/ratings.json) -> silver -> sessionize -> sequences -> gate
(expectations/sequences.json). Each job module holds pure DataFrame -> DataFrame
transformations, a ``run(spark, ctx)`` that reads and publishes exactly one run_date,
and a thin ``main()`` for spark-submit; :mod:`spark_jobs.pipeline` chains them.
"""
