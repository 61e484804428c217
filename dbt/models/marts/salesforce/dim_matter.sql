{#- Tasks can reference matters not in any backup yet; those get an inferred row (is_inferred). -#}
with matters as (
    select * from {{ ref('stg_salesforce__matters') }} where deleted_in_source_at is null
),

referenced as (
    select matter_id from {{ ref('stg_salesforce__tasks') }}
    where matter_id is not null and deleted_in_source_at is null
),

inferred as (
    select distinct referenced.matter_id
    from referenced
    left join matters on referenced.matter_id = matters.matter_id
    where matters.matter_id is null
)

select
    matter_id, matter_name, case_type, status, matter_state, client_account_id,
    principal_attorney_user_id, open_date, close_date, total_matter_value, false as is_inferred
from matters
union all
select
    matter_id, null, null, null, null, null,
    null, null, null, null, true as is_inferred
from inferred
