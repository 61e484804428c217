with source as (
    select * from {{ source('salesforce', 'task') }}
),

renamed as (
    select
        id as task_id,
        nullif(ownerid, '') as owner_user_id,
        nullif(whatid, '') as what_id,
        nullif(whoid, '') as who_id,
        nullif(litify_pm__matter__c, '') as matter_id,
        nullif(subject, '') as subject,
        nullif(status, '') as status,
        nullif(priority, '') as priority,
        nullif(type, '') as task_type,
        nullif(tasksubtype, '') as task_subtype,
        activitydate as activity_date,
        isclosed = 1 as is_closed,
        ishighpriority = 1 as is_high_priority,
        calldurationinseconds as call_duration_seconds,
        completeddatetime as completed_at,
        createddate as created_at,
        systemmodstamp as modified_at,
        _deleted_in_source_at as deleted_in_source_at
    from source
    where isdeleted = 0
)

select * from renamed
