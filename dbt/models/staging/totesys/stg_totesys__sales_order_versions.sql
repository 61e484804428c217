{% call totesys_versions('sales_order_history', 'sales_order_id') -%}
        design_id,
        staff_id,
        counterparty_id,
        units_sold,
        cast(unit_price as numeric(10, 2)) as unit_price,
        currency_id,
        agreed_delivery_date,
        agreed_payment_date,
        agreed_delivery_location_id,
{%- endcall %}
