"""Clip export: recorded ranges of a stream as MP4 files."""
