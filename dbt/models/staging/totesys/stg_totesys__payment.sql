-- The current state of each payment: its newest version (the casts live in the versions model).
{{ latest_version(ref('stg_totesys__payment_versions'), 'payment_id') }}
