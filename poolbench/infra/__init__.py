"""What a run starts and stops: PostgreSQL, the app, process groups, the ledger."""
