select
    design_id,
    design_name,
    file_location,
    file_name
from {{ ref('stg_totesys__design') }}
