with source as (
    select * from {{ source('raw_totesys', 'transaction') }}
),

renamed as (
    select
        transaction_id,
        transaction_type,
        sales_order_id,
        purchase_order_id,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
