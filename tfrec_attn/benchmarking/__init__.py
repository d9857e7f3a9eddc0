"""Benchmarks: attention cost against sequence length, recommender training throughput."""
