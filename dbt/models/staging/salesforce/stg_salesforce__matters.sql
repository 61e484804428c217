{{ salesforce_staging(source('salesforce', 'litify_pm__matter__c'), [
    ('id', 'matter_id'),
    ('name', 'matter_name', 'text'),
    ('litify_pm__client__c', 'client_account_id', 'text'),
    ('litify_pm__case_type__c', 'case_type', 'text'),
    ('litify_pm__status__c', 'status', 'text'),
    ('litify_pm__matter_state__c', 'matter_state', 'text'),
    ('litify_pm__principal_attorney__c', 'principal_attorney_user_id', 'text'),
    ('litify_pm__open_date__c', 'open_date'),
    ('litify_pm__close_date__c', 'close_date'),
    ('litify_pm__total_matter_value__c', 'total_matter_value'),
    ('ownerid', 'owner_user_id', 'text'),
]) }}
