with staff as (
    select * from {{ ref('stg_totesys__staff') }}
),

departments as (
    select * from {{ ref('stg_totesys__department') }}
)

select
    staff.staff_id,
    staff.first_name,
    staff.last_name,
    departments.department_name,
    departments.location,
    staff.email_address
from staff
left join departments on staff.department_id = departments.department_id
