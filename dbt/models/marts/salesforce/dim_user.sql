{#- Backups can reference users whose own rows have not arrived yet; they get an inferred row
    (is_inferred) so every task resolves, and are filled in once the user loads. -#}
{{ dimension_with_inferred_rows(
    ref('stg_salesforce__users'), 'user_id',
    ['username', 'full_name', 'first_name', 'last_name', 'email', 'title', 'department', 'division', 'user_type',
     'manager_user_id', 'is_active', 'last_login_at'],
    referenced_by=ref('stg_salesforce__tasks'), reference='owner_user_id') }}
