"""Names the results files give connections, shared by the collector that writes them and the
analysis that reads them: the collector's own `application_name`, and the label of a
connection no engine name claims."""

APPLICATION_NAME = "poolbench-collector"
UNTAGGED = "untagged"
