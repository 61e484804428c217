{#- Every version of each user (salesforce_history.user). The version columns keep their names
    (_valid_from, _valid_to, isdeleted) so the as_of macro applies to this view as to the source;
    soft-deleted versions stay (their interval is empty, and as_of leaves them out). -#}
with source as (
    select * from {{ source('salesforce_history', 'user') }}
),

renamed as (
    select
        id as user_id,
        username,
        nullif(name, '') as full_name,
        nullif(email, '') as email,
        nullif(title, '') as title,
        nullif(department, '') as department,
        nullif(division, '') as division,
        nullif(managerid, '') as manager_user_id,
        isactive = 1 as is_active,
        _valid_from,
        _valid_to,
        _is_current,
        _deleted_at,
        isdeleted
    from source
)

select * from renamed
