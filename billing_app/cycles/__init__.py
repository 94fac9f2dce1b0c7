"""Usage records: what each billing period's usage came to. One writer, ``services``."""
