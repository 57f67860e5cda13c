"""Batch scoring: a registered model over files of texts, on one machine or on Apache Spark."""
