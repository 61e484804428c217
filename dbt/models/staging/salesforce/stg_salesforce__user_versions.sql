{#- Every version of each user (salesforce_history.user), with the user's columns it keeps staged as
    stg_salesforce__users stages them (macros/salesforce.sql). The version columns keep their names
    (_valid_from, _valid_to, isdeleted) so the as_of macro applies to this view as to the source;
    soft-deleted versions stay (their interval is empty, and as_of leaves them out). -#}
{%- set kept = ['user_id', 'username', 'full_name', 'email', 'title', 'department', 'division', 'manager_user_id',
                'is_active'] -%}
{{ salesforce_staging(source('salesforce_history', 'user'),
                      salesforce_user_columns() | selectattr(1, 'in', kept) | list, history=true) }}
