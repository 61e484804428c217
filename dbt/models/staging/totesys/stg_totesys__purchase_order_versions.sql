{% call totesys_versions('purchase_order_history', 'purchase_order_id') -%}
        staff_id,
        counterparty_id,
        item_code,
        item_quantity,
        cast(item_unit_price as numeric(10, 2)) as item_unit_price,
        currency_id,
        agreed_delivery_date,
        agreed_payment_date,
        agreed_delivery_location_id,
{%- endcall %}
