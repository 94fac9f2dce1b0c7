"""Subscriptions, their billing periods and seats: one writer, ``services``."""
