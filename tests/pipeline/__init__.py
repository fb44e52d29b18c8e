"""Tests of the HA-free delivery core."""
