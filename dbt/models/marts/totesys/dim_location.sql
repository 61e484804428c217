select
    address_id as location_id,
    {{ address_columns() | join(', ') }}
from {{ ref('stg_totesys__address') }}
