with source as (
    select * from {{ source('raw_totesys', 'payment') }}
),

renamed as (
    select
        payment_id,
        transaction_id,
        counterparty_id,
        cast(payment_amount as numeric(12, 2)) as payment_amount,
        currency_id,
        payment_type_id,
        paid = 1 as paid,
        payment_date,
        company_ac_number,
        counterparty_ac_number,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
