with source as (
    select * from {{ source('raw_totesys', 'staff') }}
),

renamed as (
    select
        staff_id,
        first_name,
        last_name,
        department_id,
        email_address,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
