with source as (
    select * from {{ source('raw_totesys', 'department') }}
),

renamed as (
    select
        department_id,
        department_name,
        location,
        manager,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
