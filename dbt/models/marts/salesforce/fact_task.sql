{#- A task's matter is its Litify matter lookup, else its WhatId when that points at a matter. -#}
with tasks as (
    select * from {{ ref('stg_salesforce__tasks') }} where deleted_in_source_at is null
),

matters as (
    select * from {{ ref('stg_salesforce__matters') }} where deleted_in_source_at is null
),

tasks_with_matter as (
    select
        tasks.*,
        coalesce(tasks.matter_id, case when tasks.what_id in (select matter_id from matters) then tasks.what_id end)
            as resolved_matter_id
    from tasks
)

select
    tasks_with_matter.task_id,
    tasks_with_matter.owner_user_id,
    tasks_with_matter.resolved_matter_id as matter_id,
    matters.matter_name,
    matters.case_type as matter_case_type,
    matters.status as matter_status,
    tasks_with_matter.subject,
    tasks_with_matter.status,
    tasks_with_matter.priority,
    tasks_with_matter.task_type,
    tasks_with_matter.task_subtype,
    tasks_with_matter.activity_date,
    tasks_with_matter.is_closed,
    tasks_with_matter.is_high_priority,
    tasks_with_matter.call_duration_seconds,
    tasks_with_matter.completed_at,
    tasks_with_matter.created_at,
    cast(tasks_with_matter.created_at as date) as created_date
from tasks_with_matter
left join matters on tasks_with_matter.resolved_matter_id = matters.matter_id
