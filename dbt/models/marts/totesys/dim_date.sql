{#- Every day from the earliest to the latest date any fact uses, so every fact date resolves.
    The spine is built from digits rather than generate_series, which Redshift lacks. -#}
with fact_dates as (
    {%- for fact, columns in {
        'fact_sales_order': ['created_date', 'last_updated_date', 'agreed_payment_date', 'agreed_delivery_date'],
        'fact_purchase_order': ['created_date', 'last_updated_date', 'agreed_payment_date', 'agreed_delivery_date'],
        'fact_payment': ['created_date', 'last_updated_date', 'payment_date'],
    }.items() %}
    {%- for column in columns %}
    select {{ column }} as date_value from {{ ref(fact) }}
    {%- if not loop.last %} union{% endif %}
    {%- endfor %}
    {%- if not loop.last %} union{% endif %}
    {%- endfor %}
),

bounds as (
    select min(date_value) as first_date, max(date_value) as last_date from fact_dates
),

digits as (
    {%- for digit in range(10) %}
    select {{ digit }} as digit{% if not loop.last %} union all{% endif %}
    {%- endfor %}
),

day_offsets as (
    select ones.digit + 10 * tens.digit + 100 * hundreds.digit + 1000 * thousands.digit
        + 10000 * ten_thousands.digit as day_offset
    from digits as ones
    cross join digits as tens
    cross join digits as hundreds
    cross join digits as thousands
    cross join digits as ten_thousands
),

spine as (
    select cast({{ dbt.dateadd('day', 'day_offsets.day_offset', 'bounds.first_date') }} as date) as date_id
    from day_offsets
    cross join bounds
    where day_offsets.day_offset <= {{ dbt.datediff('bounds.first_date', 'bounds.last_date', 'day') }}
),

parts as (
    select
        date_id,
        cast(extract(year from date_id) as integer) as year,
        cast(extract(month from date_id) as integer) as month,
        cast(extract(day from date_id) as integer) as day,
        cast(extract(dow from date_id) as integer) as sunday_based_dow
    from spine
)

select
    date_id,
    year,
    month,
    day,
    case when sunday_based_dow = 0 then 7 else sunday_based_dow end as day_of_week,
    case sunday_based_dow
        {%- for name in ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'] %}
        when {{ loop.index0 }} then '{{ name }}'
        {%- endfor %}
    end as day_name,
    case month
        {%- for name in ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
                         'September', 'October', 'November', 'December'] %}
        when {{ loop.index }} then '{{ name }}'
        {%- endfor %}
    end as month_name,
    cast(floor((month - 1) / 3) + 1 as integer) as quarter
from parts
