{#- Each current task with its owner as the owner was on the task's date, next to the owner today.
    The task's date is its ActivityDate (00:00 UTC, as a date means everywhere in docs/history.md),
    else its CreatedDate; the owner's version is the one of salesforce_history.user current then
    (macro as_of). No version (the date is before the first version a backup held, or the user was
    deleted then): the *_then columns are null and owner_version_found is false. -#}
with tasks as (
    select * from {{ ref('stg_salesforce__tasks') }} where deleted_in_source_at is null
),

dated as (
    select
        tasks.*,
        coalesce(cast(tasks.activity_date as timestamp) at time zone 'UTC', tasks.created_at) as as_of_at
    from tasks
),

owner_versions as (
    select * from {{ ref('stg_salesforce__user_versions') }}
),

owners_now as (
    select * from {{ ref('dim_user') }}
)

select
    dated.task_id,
    dated.owner_user_id,
    dated.subject,
    dated.status,
    dated.activity_date,
    dated.created_at,
    dated.as_of_at,
    owner_then.user_id is not null as owner_version_found,
    owner_then._valid_from as owner_version_valid_from,
    owner_then._valid_to as owner_version_valid_to,
    owner_then.full_name as owner_name_then,
    owner_then.title as owner_title_then,
    owner_then.department as owner_department_then,
    owner_then.division as owner_division_then,
    owner_then.manager_user_id as owner_manager_user_id_then,
    owner_then.is_active as owner_is_active_then,
    owner_now.full_name as owner_name_now,
    owner_now.title as owner_title_now,
    owner_now.department as owner_department_now,
    owner_now.division as owner_division_now,
    owner_now.manager_user_id as owner_manager_user_id_now,
    owner_now.is_active as owner_is_active_now
from dated
left join owner_versions as owner_then
    on owner_then.user_id = dated.owner_user_id
    and {{ as_of('owner_then', 'dated.as_of_at') }}
left join owners_now as owner_now
    on owner_now.user_id = dated.owner_user_id
