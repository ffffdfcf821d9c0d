"""What a run starts and stops: PostgreSQL, PgBouncer, the app, process groups, the ledger."""
