with source as (
    {{ first_extraction_of_each_version('purchase_order_history', 'purchase_order_id') }}
),

renamed as (
    select
        purchase_order_id,
        staff_id,
        counterparty_id,
        item_code,
        item_quantity,
        cast(item_unit_price as numeric(10, 2)) as item_unit_price,
        currency_id,
        agreed_delivery_date,
        agreed_payment_date,
        agreed_delivery_location_id,
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated,
        _source_partition as first_extracted_in
    from source
)

select * from renamed
