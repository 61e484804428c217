with source as (
    select * from {{ source('raw_totesys', 'design') }}
),

renamed as (
    select
        design_id,
        design_name,
        file_location,
        file_name,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
