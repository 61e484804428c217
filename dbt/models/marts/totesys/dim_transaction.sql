select
    transaction_id,
    transaction_type,
    sales_order_id,
    purchase_order_id
from {{ ref('stg_totesys__transaction') }}
