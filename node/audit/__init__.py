"""Audits: a log's integrity (`log`) and its chain observations against the chain (`chain`)."""
