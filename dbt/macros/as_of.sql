{#-
  The condition that keeps, of a versions table (salesforce_history.<object>, docs/history.md), the
  version of each record current at `date_expr` (any SQL expression: a literal, or a column of the
  row being joined, such as a task's created_at), leaving out deleted records. The same condition as
  etl_assets.warehouse.history.as_of_query. Use: `join {{ source(...) }} as u on u.id = t.ownerid
  and {{ as_of('u', 't.createddate') }}`.
-#}
{% macro as_of(relation, date_expr, soft_delete_column='isdeleted') -%}
    ({{ relation }}._valid_from <= {{ date_expr }}
     and ({{ relation }}._valid_to is null or {{ relation }}._valid_to > {{ date_expr }})
     {%- if soft_delete_column %}
     and ({{ relation }}.{{ soft_delete_column }} is null or {{ relation }}.{{ soft_delete_column }} = 0)
     {%- endif %})
{%- endmacro %}
