{{ salesforce_staging(source('salesforce', 'user'), salesforce_user_columns()) }}
