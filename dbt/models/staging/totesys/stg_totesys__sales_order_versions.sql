with source as (
    {{ first_extraction_of_each_version('sales_order_history', 'sales_order_id') }}
),

renamed as (
    select
        sales_order_id,
        design_id,
        staff_id,
        counterparty_id,
        units_sold,
        cast(unit_price as numeric(10, 2)) as unit_price,
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
