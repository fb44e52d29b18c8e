"""``ha-ingestor-services migrate``: tools for moving to HA Ingestor.

``verify`` compares what two stores hold for a time window, per entity: readers.py
(InfluxDB 1.x and 2.x in either layout, a storage service's query API), compare.py (the
merge of two sorted streams), report.py (text, JSON, progress), command.py (flags).
"""
