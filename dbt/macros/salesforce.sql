{#- The Salesforce staging views and marts (models/*/salesforce/). An object table of the
    `salesforce` source keeps text as '' rather than null and checkboxes as 0/1; the staging views
    turn them into nulls and booleans, and the macros below are where that is written, once. -#}

{#- A column of an object table as staged: `kind` 'text' makes '' null, 'flag' makes 0/1 a
    boolean, none keeps the value as it is. -#}
{% macro salesforce_value(column, kind=none) -%}
    {%- if kind == 'text' -%}
        nullif({{ column }}, '')
    {%- elif kind == 'flag' -%}
        {{ column }} = 1
    {%- elif kind is none -%}
        {{ column }}
    {%- else -%}
        {{ exceptions.raise_compiler_error("salesforce_value: unknown kind '" ~ kind ~ "' of column " ~ column) }}
    {%- endif -%}
{%- endmacro %}

{#- The staging view of a Salesforce object: `relation`'s `columns`, each a tuple (column, name)
    or (column, name, kind) (salesforce_value), renamed in that order, then its system columns.
    - The current rows (a table of the `salesforce` source): created_at, modified_at and
      deleted_in_source_at; soft-deleted rows (isdeleted = 1) are left out, rows hard-deleted in
      Salesforce are kept with deleted_in_source_at set (the marts leave them out).
    - `history`, the versions (a table of `salesforce_history`, docs/history.md): every version,
      soft-deleted ones included, with the version columns under their own names (_valid_from,
      _valid_to, _is_current, _deleted_at, isdeleted), so the as_of macro applies to the view as to
      the source. It only selects from the relation: a table or a view. -#}
{% macro salesforce_staging(relation, columns, history=false) -%}
with source as (
    select * from {{ relation }}
),

renamed as (
    select
    {%- for column in columns %}
        {{ salesforce_value(column[0], column[2] if column | length > 2 else none) }} as {{ column[1] }},
    {%- endfor %}
    {%- if history %}
        _valid_from,
        _valid_to,
        _is_current,
        _deleted_at,
        isdeleted
    from source
    {%- else %}
        createddate as created_at,
        systemmodstamp as modified_at,
        _deleted_in_source_at as deleted_in_source_at
    from source
    where isdeleted = 0
    {%- endif %}
)

select * from renamed
{%- endmacro %}

{#- User's columns as staged, for salesforce_staging: the current users (stg_salesforce__users)
    and their versions (stg_salesforce__user_versions, which keeps some of them) stage a column the
    same way. -#}
{% macro salesforce_user_columns() -%}
    {{ return([
        ('id', 'user_id'),
        ('username', 'username'),
        ('firstname', 'first_name', 'text'),
        ('lastname', 'last_name', 'text'),
        ('name', 'full_name', 'text'),
        ('email', 'email', 'text'),
        ('title', 'title', 'text'),
        ('department', 'department', 'text'),
        ('division', 'division', 'text'),
        ('usertype', 'user_type', 'text'),
        ('managerid', 'manager_user_id', 'text'),
        ('isactive', 'is_active', 'flag'),
        ('lastlogindate', 'last_login_at'),
    ]) }}
{%- endmacro %}

{#- A dimension every reference resolves in: the rows of `staged` (a staging view) not hard-deleted
    in Salesforce, by `key`, with `columns`; and an inferred row (every other column null) for each
    key that a row of `referenced_by` not hard-deleted names in its column `reference` while `staged`
    does not hold it yet (its record has not arrived in a backup). is_inferred tells them apart; an
    inferred row becomes a real one once its record loads. -#}
{% macro dimension_with_inferred_rows(staged, key, columns, referenced_by, reference) -%}
with members as (
    select * from {{ staged }} where deleted_in_source_at is null
),

referenced as (
    select {{ reference }} as {{ key }} from {{ referenced_by }}
    where {{ reference }} is not null and deleted_in_source_at is null
),

inferred as (
    select distinct referenced.{{ key }}
    from referenced
    left join members on referenced.{{ key }} = members.{{ key }}
    where members.{{ key }} is null
)

select
    {{ key }}, {{ columns | join(', ') }}, false as is_inferred
from members
union all
select
    {{ key }}{% for column in columns %}, null{% endfor %}, true as is_inferred
from inferred
{%- endmacro %}
