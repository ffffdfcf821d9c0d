"""Names the results files give connections, shared by the collector that writes them and the
analysis that reads them: poolbench's own `application_name` (the collector's, and that of
every connection poolbench opens to set up or tear down: left out of every count), and the
label of a connection no engine name claims."""

APPLICATION_NAME = "poolbench-collector"
UNTAGGED = "untagged"
