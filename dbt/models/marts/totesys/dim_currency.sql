with currencies as (
    select * from {{ ref('stg_totesys__currency') }}
),

names as (
    select * from {{ ref('currency_names') }}
)

select
    currencies.currency_id,
    currencies.currency_code,
    coalesce(names.currency_name, currencies.currency_code) as currency_name
from currencies
left join names on currencies.currency_code = names.currency_code
