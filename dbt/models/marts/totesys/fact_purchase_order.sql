{#- Built from every extracted version (the history), not the current state: versions superseded
    between two builds still arrive, and a full refresh rebuilds the same rows. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['purchase_order_id', 'last_updated_date', 'last_updated_time'],
) }}

with purchase_orders as (
    select * from {{ ref('stg_totesys__purchase_order_versions') }}
),

new_versions as (
    select * from purchase_orders
    {{ new_versions_only('purchase_orders', 'purchase_order_id') }}
)

select
    {{ next_record_id('purchase_record_id', 'first_extracted_in, last_updated, purchase_order_id') }} as purchase_record_id,
    purchase_order_id,
    cast(created_at as date) as created_date,
    cast(created_at as time) as created_time,
    cast(last_updated as date) as last_updated_date,
    cast(last_updated as time) as last_updated_time,
    staff_id,
    counterparty_id,
    item_code,
    item_quantity,
    item_unit_price,
    currency_id,
    agreed_delivery_date,
    agreed_payment_date,
    agreed_delivery_location_id
from new_versions
