-- The current state of each sales_order: its newest version (the casts live in the versions model).
{{ latest_version(ref('stg_totesys__sales_order_versions'), 'sales_order_id') }}
