with source as (
    select * from {{ source('raw_totesys', 'address') }}
),

renamed as (
    select
        address_id,
        address_line_1,
        address_line_2,
        district,
        city,
        postal_code,
        country,
        phone,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
