"""Notifications that arrive: the outbox's events, their formats per target kind, and delivery.

events.py   what is written to the outbox, inside the transaction of what it reports
formats.py  one event as a webhook body (signed), a Slack message or a PagerDuty Events API v2 event
worker.py   the delivery worker: claim due rows, POST, retry with backoff, dead-letter after N attempts
"""
