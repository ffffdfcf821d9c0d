"""The processes a run stands up besides the app: servers and poolers poolbench owns."""
