-- The current state of each purchase_order: its newest version (the casts live in the versions model).
{{ latest_version(ref('stg_totesys__purchase_order_versions'), 'purchase_order_id') }}
