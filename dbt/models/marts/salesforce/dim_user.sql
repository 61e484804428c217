{#- Backups can reference users whose own rows have not arrived yet; they get an inferred row
    (is_inferred) so every task resolves, and are filled in once the user loads. -#}
with users as (
    select * from {{ ref('stg_salesforce__users') }} where deleted_in_source_at is null
),

referenced as (
    select owner_user_id as user_id from {{ ref('stg_salesforce__tasks') }}
    where owner_user_id is not null and deleted_in_source_at is null
),

inferred as (
    select distinct referenced.user_id
    from referenced
    left join users on referenced.user_id = users.user_id
    where users.user_id is null
)

select
    user_id, username, full_name, first_name, last_name, email, title, department, division,
    user_type, manager_user_id, is_active, last_login_at, false as is_inferred
from users
union all
select
    user_id, null, null, null, null, null, null, null, null,
    null, null, null, null, true as is_inferred
from inferred
