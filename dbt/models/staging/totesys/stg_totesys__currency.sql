with source as (
    select * from {{ source('raw_totesys', 'currency') }}
),

renamed as (
    select
        currency_id,
        upper(currency_code) as currency_code,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
