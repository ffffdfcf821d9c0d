"""The load: Locust as a subprocess, poolbench's Locust plugin, load shapes."""
