"""Signals the app sends. Receivers run after the transaction that decided them commits."""

from django.dispatch import Signal

usage_threshold_crossed = Signal()
"""A tenant's usage of a primitive reached ``threshold`` (a fraction, e.g. 0.8) of its quota
in a quota window; sent once per tenant, primitive, window and threshold, however many
concurrent calls crossed it. Arguments: ``tenant``, ``primitive``, ``threshold``, ``usage``,
``limit``, ``window`` (a ``periods.Window``)."""
