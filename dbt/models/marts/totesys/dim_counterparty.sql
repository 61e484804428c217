with counterparties as (
    select * from {{ ref('stg_totesys__counterparty') }}
),

addresses as (
    select * from {{ ref('stg_totesys__address') }}
)

select
    counterparties.counterparty_id,
    counterparties.counterparty_legal_name,
    addresses.address_line_1 as counterparty_legal_address_line_1,
    addresses.address_line_2 as counterparty_legal_address_line_2,
    addresses.district as counterparty_legal_district,
    addresses.city as counterparty_legal_city,
    addresses.postal_code as counterparty_legal_postal_code,
    addresses.country as counterparty_legal_country,
    addresses.phone as counterparty_legal_phone_number
from counterparties
left join addresses on counterparties.legal_address_id = addresses.address_id
