"""Orchestration: drivers that chain the Spark jobs and the model stages (the top layer)."""
