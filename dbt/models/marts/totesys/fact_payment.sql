{#- Built from every extracted version (the history), not the current state: versions superseded
    between two builds still arrive, and a full refresh rebuilds the same rows. -#}
{{ config(
    materialized='incremental',
    incremental_strategy='delete+insert',
    unique_key=['payment_id', 'last_updated_date', 'last_updated_time'],
) }}

with payments as (
    select * from {{ ref('stg_totesys__payment_versions') }}
),

new_versions as (
    select * from payments
    {{ new_versions_only('payments', 'payment_id') }}
)

select
    {{ next_record_id('payment_record_id', 'first_extracted_in, last_updated, payment_id') }} as payment_record_id,
    payment_id,
    cast(created_at as date) as created_date,
    cast(created_at as time) as created_time,
    cast(last_updated as date) as last_updated_date,
    cast(last_updated as time) as last_updated_time,
    transaction_id,
    counterparty_id,
    payment_amount,
    currency_id,
    payment_type_id,
    paid,
    payment_date
from new_versions
