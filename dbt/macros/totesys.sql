{#- Raw timestamps are TIMESTAMPTZ; totesys times are UTC wall-clock, so compare and split them
    as UTC whatever the session time zone. `at time zone` is spelt the same on DuckDB,
    PostgreSQL and Redshift. -#}
{% macro utc(column) -%}
    ({{ column }} at time zone 'UTC')
{%- endmacro %}

{#- Facts keep one row per version of a source row: on incremental runs, only the staged
    rows whose (key, last_updated) is not in the fact yet. -#}
{% macro new_versions_only(alias, key) -%}
    {%- if is_incremental() %}
    where not exists (
        select 1 from {{ this }} as existing
        where existing.{{ key }} = {{ alias }}.{{ key }}
          and existing.last_updated_date = cast({{ alias }}.last_updated as date)
          and existing.last_updated_time = cast({{ alias }}.last_updated as time)
    )
    {%- endif %}
{%- endmacro %}

{#- A surrogate key that keeps counting across incremental runs: the fact's highest key plus
    the row's position among this run's new versions (oldest first). -#}
{% macro next_record_id(record_id, order_by) -%}
    {%- if is_incremental() -%}
    (select coalesce(max({{ record_id }}), 0) from {{ this }})
    {%- else -%}
    0
    {%- endif %} + row_number() over (order by {{ order_by }})
{%- endmacro %}
