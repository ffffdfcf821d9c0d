"""A FastAPI service that grew its database access in five places (poolbench specimen)."""
