"""Events out: what Notifier tells the product about what happened.

Two doors: Django signals for code in the same process (`signals`), and outbound webhooks,
signed per the Standard Webhooks spec, for everything else. Both are fed by `record`, which the
writers of the core call in their own transactions; `sending` posts the outbox to the endpoints.
"""
