{% call totesys_versions('payment_history', 'payment_id') -%}
        transaction_id,
        counterparty_id,
        cast(payment_amount as numeric(12, 2)) as payment_amount,
        currency_id,
        payment_type_id,
        paid = 1 as paid,
        payment_date,
        company_ac_number,
        counterparty_ac_number,
{%- endcall %}
