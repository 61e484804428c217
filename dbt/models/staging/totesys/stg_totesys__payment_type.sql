with source as (
    select * from {{ source('raw_totesys', 'payment_type') }}
),

renamed as (
    select
        payment_type_id,
        payment_type_name,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
