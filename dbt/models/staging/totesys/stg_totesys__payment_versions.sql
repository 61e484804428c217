with source as (
    {{ first_extraction_of_each_version('payment_history', 'payment_id') }}
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
        {{ utc('last_updated') }} as last_updated,
        _source_partition as first_extracted_in
    from source
)

select * from renamed
