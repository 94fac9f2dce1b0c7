"""The outbox: messages to Stripe and to the operator, written in the transaction that
decided them and delivered after it, outside any transaction, with retries."""
