{#- Built from every extracted version (the history), not the current state: versions superseded
    between two builds still arrive, and a full refresh rebuilds the same rows. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['sales_order_id', 'last_updated_date', 'last_updated_time'],
) }}

with sales_orders as (
    select * from {{ ref('stg_totesys__sales_order_versions') }}
),

new_versions as (
    select * from sales_orders
    {{ new_versions_only('sales_orders', 'sales_order_id') }}
)

select
    {{ next_record_id('sales_record_id', 'first_extracted_in, last_updated, sales_order_id') }} as sales_record_id,
    sales_order_id,
    cast(created_at as date) as created_date,
    cast(created_at as time) as created_time,
    cast(last_updated as date) as last_updated_date,
    cast(last_updated as time) as last_updated_time,
    staff_id as sales_staff_id,
    counterparty_id,
    units_sold,
    unit_price,
    currency_id,
    design_id,
    agreed_payment_date,
    agreed_delivery_date,
    agreed_delivery_location_id
from new_versions
