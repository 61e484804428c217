with source as (
    select * from {{ source('salesforce', 'litify_pm__matter__c') }}
),

renamed as (
    select
        id as matter_id,
        nullif(name, '') as matter_name,
        nullif(litify_pm__client__c, '') as client_account_id,
        nullif(litify_pm__case_type__c, '') as case_type,
        nullif(litify_pm__status__c, '') as status,
        nullif(litify_pm__matter_state__c, '') as matter_state,
        nullif(litify_pm__principal_attorney__c, '') as principal_attorney_user_id,
        litify_pm__open_date__c as open_date,
        litify_pm__close_date__c as close_date,
        litify_pm__total_matter_value__c as total_matter_value,
        nullif(ownerid, '') as owner_user_id,
        createddate as created_at,
        systemmodstamp as modified_at,
        _deleted_in_source_at as deleted_in_source_at
    from source
    where isdeleted = 0
)

select * from renamed
