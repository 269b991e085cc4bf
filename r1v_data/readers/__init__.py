"""Readers: sources (files, folders, Hub datasets, the bundled sample) into records, column presets
into r1v's fields, images decoded and checked, and records into sample rows or quarantine rows."""
