"""Customers (who is billed, any model), their kits, and the keys that act for them."""
