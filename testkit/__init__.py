"""Builders the tests and the benchmark share: mini repositories with history, fault injectors, a token server."""
