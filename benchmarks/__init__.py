"""Benchmark scripts: each times something and prints (and saves under results/) a table."""
