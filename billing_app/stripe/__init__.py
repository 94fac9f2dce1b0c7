"""Stripe, both ways, through dj-stripe: ``sync`` applies Stripe's state to customers,
``calls`` asks Stripe for what a customer or operator wants (Checkout, the portal, plan
changes, cancellation). Neither calls Stripe inside a database transaction."""
