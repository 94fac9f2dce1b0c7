"""The catalog: Account Kits and plans (quotas, features, prices)."""
