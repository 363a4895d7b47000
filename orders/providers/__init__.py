"""Payment provider adapters: one module per provider behind `base.PaymentProvider`."""
