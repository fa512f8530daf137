"""Helpers for the tests: running the command line, temporary stores, real servers, a fault-injecting proxy."""
