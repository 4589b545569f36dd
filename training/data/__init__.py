"""Data step: fetch the pinned artifact, clean, deduplicate and split. One module per task."""
