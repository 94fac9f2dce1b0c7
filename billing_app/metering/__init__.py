"""Metering: the usage ledger (``ledger``), the quota decision and every way usage is
recorded (``services``), usage alerts (``alerts``) and what the API reads (``selectors``).
"""
