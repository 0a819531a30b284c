"""Metadata in SQL: the source of truth for every resource and job."""
