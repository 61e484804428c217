{#- Models land in the schema they are configured with (staging, marts), the same on every
    target, so asset keys [schema, model] name real tables. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name else target.schema }}
{%- endmacro %}
