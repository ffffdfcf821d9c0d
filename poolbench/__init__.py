"""poolbench: measure what a connection-pool change does to PostgreSQL, under real load."""

__version__ = "0.1.0"
