{#- Tasks can reference matters not in any backup yet; those get an inferred row (is_inferred). -#}
{{ dimension_with_inferred_rows(
    ref('stg_salesforce__matters'), 'matter_id',
    ['matter_name', 'case_type', 'status', 'matter_state', 'client_account_id', 'principal_attorney_user_id',
     'open_date', 'close_date', 'total_matter_value'],
    referenced_by=ref('stg_salesforce__tasks'), reference='matter_id') }}
