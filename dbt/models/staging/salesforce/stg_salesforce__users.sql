with source as (
    select * from {{ source('salesforce', 'user') }}
),

renamed as (
    select
        id as user_id,
        username,
        nullif(firstname, '') as first_name,
        nullif(lastname, '') as last_name,
        nullif(name, '') as full_name,
        nullif(email, '') as email,
        nullif(title, '') as title,
        nullif(department, '') as department,
        nullif(division, '') as division,
        nullif(usertype, '') as user_type,
        nullif(managerid, '') as manager_user_id,
        isactive = 1 as is_active,
        lastlogindate as last_login_at,
        createddate as created_at,
        systemmodstamp as modified_at,
        _deleted_in_source_at as deleted_in_source_at
    from source
    where isdeleted = 0
)

select * from renamed
