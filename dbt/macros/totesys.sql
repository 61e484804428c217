{#- Raw timestamps are TIMESTAMPTZ; totesys times are UTC wall-clock, so compare and split them
    as UTC whatever the session time zone. `at time zone` is spelt the same on DuckDB,
    PostgreSQL and Redshift. -#}
{% macro utc(column) -%}
    ({{ column }} at time zone 'UTC')
{%- endmacro %}

{#- Facts keep one row per version of a source row: on incremental runs, only the versions
    whose (key, last_updated) is not in the fact yet. -#}
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
    the row's position among this run's new versions. Ordered by the window that first extracted
    the version, every version new to an incremental run sorts after every version already in
    the fact, so a full refresh numbers the rows exactly as the incremental runs did. -#}
{% macro next_record_id(record_id, order_by) -%}
    {%- if is_incremental() -%}
    (select coalesce(max({{ record_id }}), 0) from {{ this }})
    {%- else -%}
    0
    {%- endif %} + row_number() over (order by {{ order_by }})
{%- endmacro %}

{#- Each version of a source row once, from the first extraction window that landed it: the
    history repeats a version that a window's overlap re-read, and the first window is what
    orders the fact's surrogate key the same on every (re)build. -#}
{% macro first_extraction_of_each_version(table, key) -%}
    select *
    from (
        select
            history.*,
            row_number() over (
                partition by history.{{ key }}, history.last_updated
                order by history._source_partition, history._source_line
            ) as extraction_rank
        from {{ source('raw_totesys', table) }} as history
    ) as extractions
    where extraction_rank = 1
{%- endmacro %}

{#- Generic test: no two rows share the values of `columns`. -#}
{% test unique_combination_of_columns(model, columns) %}
    select {{ columns | join(', ') }}, count(*) as occurrences
    from {{ model }}
    group by {{ columns | join(', ') }}
    having count(*) > 1
{% endtest %}

{#- The current state of each source row: its newest version. Current-state models are built
    from the versions model so a column's cast is written once; (key, last_updated) is unique
    there (tested), so exactly one version per key survives. Portable SQL: no DISTINCT ON or
    QUALIFY, which Redshift lacks. -#}
{% macro latest_version(versions, key) -%}
    select versions.*
    from {{ versions }} as versions
    where not exists (
        select 1 from {{ versions }} as newer
        where newer.{{ key }} = versions.{{ key }}
          and newer.last_updated > versions.last_updated
    )
{%- endmacro %}

{#- The staging view of the versions of a totesys table (`history_table`, raw_totesys's history of
    every version each extraction window landed): each version once, from the window that first
    extracted it (first_extraction_of_each_version); `key`, the caller's columns, created_at and
    last_updated as UTC, and that window as first_extracted_in (what orders the facts' surrogate
    keys). The caller's columns each end with a comma:
    {% call totesys_versions('payment_history', 'payment_id') %} transaction_id, ... {% endcall %} -#}
{% macro totesys_versions(history_table, key) -%}
with source as (
    {{ first_extraction_of_each_version(history_table, key) }}
),

renamed as (
    select
        {{ key }},
{{ caller() }}
        {{ utc('created_at') }} as created_at,
        {{ utc('last_updated') }} as last_updated,
        _source_partition as first_extracted_in
    from source
)

select * from renamed
{%- endmacro %}

{#- An address's columns after its key, in order: what stg_totesys__address stages and the location
    dimension keeps (dim_location: a location is an address). -#}
{% macro address_columns() -%}
    {{ return(['address_line_1', 'address_line_2', 'district', 'city', 'postal_code', 'country', 'phone']) }}
{%- endmacro %}
