with source as (
    select * from {{ source('raw_totesys', 'counterparty') }}
),

renamed as (
    select
        counterparty_id,
        counterparty_legal_name,
        legal_address_id,
        commercial_contact,
        delivery_contact,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
