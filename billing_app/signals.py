"""Signals the app sends. Receivers run after the transaction that decided them commits."""

from django.dispatch import Signal

usage_threshold_crossed = Signal()
"""A customer's usage of a primitive reached ``threshold`` (a fraction, e.g. 0.8) of its
quota in a quota window; sent after the commit, once per customer, primitive, window and
threshold, however many concurrent calls crossed it. Arguments: ``customer`` (an instance
of the customer model), ``primitive``, ``threshold`` (a float), ``usage``, ``limit``,
``window`` (a ``periods.Window``: ``start``, ``end``)."""

credit_balance_low = Signal()
"""A customer's credit balance fell to ``threshold`` (a fraction, e.g. 0.2) of the credits
its active grants gave, or below; sent after the commit, once per threshold until the
active grants change. Arguments: ``customer``, ``threshold`` (a float), ``balance``,
``granted``."""
