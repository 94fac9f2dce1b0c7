"""Receivers of other apps' signals (dj-stripe's webhooks). Idempotent; they re-read objects
by id and hand every decision to ``services``."""
