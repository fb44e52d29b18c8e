"""Tests of the data storage service."""
