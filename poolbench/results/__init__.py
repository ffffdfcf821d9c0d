"""The results folder: typed readers and writers of every file a run writes."""
