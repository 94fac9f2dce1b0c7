"""Plans, Stripe-synced subscriptions, metering and exact quota enforcement for Django."""
