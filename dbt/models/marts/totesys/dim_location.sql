select
    address_id as location_id,
    address_line_1,
    address_line_2,
    district,
    city,
    postal_code,
    country,
    phone
from {{ ref('stg_totesys__address') }}
