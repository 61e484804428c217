with source as (
    select * from {{ source('raw_totesys', 'address') }}
),

renamed as (
    select
        address_id,
        {%- for column in address_columns() %}
        {{ column }},
        {%- endfor %}
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated
    from source
)

select * from renamed
