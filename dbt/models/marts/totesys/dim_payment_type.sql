select
    payment_type_id,
    payment_type_name
from {{ ref('stg_totesys__payment_type') }}
