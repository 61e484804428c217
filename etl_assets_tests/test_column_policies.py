"""Column policies on raw text batches: what each policy writes, which policy a column gets, and refusals."""

import hashlib
import hmac

import pyarrow as pa
import pytest

from etl_assets.landing.column_policies import (
    HASH_BATCH_ROWS,
    HASH_KEY_ENV,
    Action,
    ObjectPolicies,
    PolicyError,
    apply_policies,
    hash_key,
    hash_values,
    mask_values,
    parse_object_policies,
    parse_rules,
)

KEY = b"0123456789abcdef0123456789abcdef"


def test_hash_is_rfc_4231_hmac_sha256():
    # RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    digest = hash_values(pa.array(["what do ya want for nothing?"]), b"Jefe").to_pylist()
    assert digest == ["5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"]


def test_hash_is_stable_keyed_and_leaves_empty_values():
    values = pa.array(["ann@example.com", "", None, "Zoë Müller", "ann@example.com"])
    hashed = hash_values(values, KEY).to_pylist()
    assert hashed[0] == hashed[4] == hmac.new(KEY, b"ann@example.com", hashlib.sha256).hexdigest()
    assert hashed[3] == hmac.new(KEY, "Zoë Müller".encode(), hashlib.sha256).hexdigest()
    assert hashed[1:3] == ["", None]
    assert hash_values(values, KEY[::-1]).to_pylist()[0] != hashed[0]  # another key, another digest


def test_mask_keeps_the_documented_part():
    values = pa.array(["ann@example.com", "a@b@c.org", "+1 415 555 0134", "1234567", "Zoë Müller-Lüdenscheidt", "",
                       None])
    assert mask_values(values).to_pylist() == [
        "***@example.com", "***@c.org", "***0134", "***", "***eidt", "", None]


def test_object_entries_win_over_rules_and_the_first_matching_rule_wins():
    rules = parse_rules([{"match": "Contact.Email", "policy": "exclude"}, {"match": "*email*", "policy": "hash"},
                         {"match": "Email", "policy": "mask"}, {"match": "*SSN*", "policy": "exclude"}])
    contact = parse_object_policies("Contact", {"Phone": "mask", "Personal_Email__c": "keep"}, rules, ["Id"])
    lead = parse_object_policies("Lead", None, rules, ["Id"])
    assert contact.policy("Email").action is Action.EXCLUDE
    assert contact.policy("Personal_Email__c").action is Action.KEEP
    assert contact.policy("PHONE").action is Action.MASK  # Data Loader may upper-case a header
    assert lead.policy("Email").action is Action.HASH and lead.policy("Email").origin == "rule '*email*'"
    assert lead.policy("Tax_SSN__c").action is Action.EXCLUDE
    assert lead.policy("Company").action is Action.KEEP
    assert lead.for_header(["Id", "Email", "Company"]) == {"Email": lead.policy("Email")}
    assert lead.may_hash and not parse_object_policies("X", {"A": "mask"}).may_hash


def test_the_merge_columns_are_always_kept():
    rules = parse_rules([{"match": "*", "policy": "hash"}])
    account = parse_object_policies("Account", None, rules, ["Id", "SystemModstamp"])
    assert account.policy("Id").action is Action.KEEP and account.policy("systemmodstamp").action is Action.KEEP
    assert account.policy("Name").action is Action.HASH
    with pytest.raises(PolicyError, match=r"objects\.Account\.column_policies\.Id: the merge compares"):
        parse_object_policies("Account", {"Id": "hash"}, protected=["Id"])


@pytest.mark.parametrize("raw, message", [
    ({"Email": "encrypt"}, r"objects\.Contact\.column_policies\.Email: unknown policy 'encrypt' \(use keep, exclude"),
    (["Email"], r"expected a mapping of field name to policy"),
])
def test_malformed_object_entries_are_refused_with_where(raw, message):
    with pytest.raises(PolicyError, match=message):
        parse_object_policies("Contact", raw)


@pytest.mark.parametrize("raw, message", [
    ({"Email": "hash"}, r"column_policies: expected a list"),
    ([{"match": "Email"}], r"column_policies\[1\]: expected exactly the keys 'match' and 'policy'"),
    ([{"match": "A.B.C", "policy": "hash"}], r"column_policies\[1\]: 'match' must be"),
    ([{"match": "Email", "policy": "drop"}], r"column_policies\[1\]: unknown policy 'drop'"),
])
def test_malformed_rules_are_refused_with_where(raw, message):
    with pytest.raises(PolicyError, match=message):
        parse_rules(raw)


def test_apply_drops_hashes_and_masks_and_keeps_the_rest():
    batch = pa.RecordBatch.from_pydict({"Id": ["001"], "Email": ["ann@example.com"], "Phone": ["+1 415 555 0134"],
                                        "Birthdate": ["1980-04-12"], "Name": ["Ann"]})
    policies = parse_object_policies("Contact", {"Email": "hash", "Phone": "mask", "Birthdate": "exclude"},
                                     protected=["Id"]).for_header(batch.schema.names)
    out = apply_policies(batch, policies, KEY)
    assert out.schema.names == ["Id", "Email", "Phone", "Name"]
    assert out.to_pydict() == {"Id": ["001"], "Email": [hmac.new(KEY, b"ann@example.com", hashlib.sha256).hexdigest()],
                               "Phone": ["***0134"], "Name": ["Ann"]}


def test_a_hash_without_a_key_is_refused_not_skipped():
    batch = pa.RecordBatch.from_pydict({"Email": ["ann@example.com"]})
    policies = ObjectPolicies("Contact", {"email": Action.HASH}).for_header(["Email"])
    with pytest.raises(PolicyError, match="Email is to be hashed"):
        apply_policies(batch, policies, None)


def test_the_key_is_required_and_long_enough_and_never_quoted():
    with pytest.raises(PolicyError, match=f"Contact hashes columns but {HASH_KEY_ENV} is not set"):
        hash_key(None, "Contact")
    with pytest.raises(PolicyError, match="is 6 characters long") as refused:
        hash_key("s3cr3t", "Contact")
    assert "s3cr3t" not in str(refused.value)
    assert hash_key("x" * 32, "Contact") == b"x" * 32


def test_staged_rows_and_rejects_hold_no_clear_value(tmp_path):
    """The policies apply before the transform: the staged Parquet, the rejects' raw records and the
    reasons hold only the policies' output, and an excluded field is no column of the table."""
    import pyarrow.parquet as pq

    from etl_assets.salesforce.catalog import parse_catalog
    from etl_assets.salesforce.staging import SourceFile, stage_object

    catalog = parse_catalog({
        "column_policies": [{"match": "Birthdate", "policy": "exclude"}, {"match": "*Phone", "policy": "mask"}],
        "objects": {"Contact": {"columns": {"Id": {"type": "id", "nullable": False}, "Email": "string",
                                            "Birthdate": "date", "SystemModstamp": "datetime",
                                            "NumberOfEmployees__c": "integer"},
                                "column_policies": {"Email": "hash"}}}})
    contact = catalog["Contact"]
    assert [c.name for c in contact.columns] == ["id", "email", "systemmodstamp", "numberofemployees__c"]
    path = tmp_path / "Contact.csv"
    path.write_text(
        "Id,Email,Birthdate,MobilePhone,SystemModstamp,NumberOfEmployees__c\n"
        "003000000000001AAA,MARKER-EMAIL-1@example.com,1980-01-01,+1 415 555 0101,2024-01-01T00:00:00.000Z,3\n"
        "003000000000002AAA,MARKER-EMAIL-2@example.com,1981-02-02,+1 415 555 0102,2024-01-01T00:00:00.000Z,many\n")
    batch, report = stage_object(contact, [SourceFile("backup/20240101_Differential/Contact/Contact.csv", path)],
                                 "20240101_Differential", hash_key=KEY)
    try:
        staged = pq.read_table(batch.files).to_pydict()
        rejects = pq.read_table(batch.reject_files).to_pydict()
        assert "birthdate" not in staged and "birthdate" not in {c.name for c in batch.spec.columns}
        assert staged["email"] == [hmac.new(KEY, b"MARKER-EMAIL-1@example.com", hashlib.sha256).hexdigest()]
        assert staged["mobilephone"] == ["***0101"]
        assert report.rows_rejected == 1 and "many" in rejects["reason"][0]
        everything = repr((staged, rejects, report))
        for clear in ("MARKER-EMAIL", "1980-01-01", "1981-02-02", "555 010"):
            assert clear not in everything
    finally:
        batch.discard()


def test_the_asset_description_and_column_schema_name_each_policy():
    from etl_assets.salesforce.assets import object_description
    from etl_assets.salesforce.catalog import parse_catalog
    from etl_assets.warehouse.io_manager import table_schema

    contact = parse_catalog({"column_policies": [{"match": "*Phone", "policy": "mask"}],
                             "objects": {"Contact": {"version_column": None, "columns": {"Id": "id", "Email": "string", "Name": "string"},
                                                     "column_policies": {"Email": "hash"}}}})["Contact"]
    assert "Column policies (docs/personal-data.md): this object's: `Email` hash; rules: `*Phone` mask." in (
        object_description(contact))
    described = {c.name: c.description for c in table_schema(
        contact.table_spec(("mobilephone",), {"mobilephone": "MobilePhone"})).columns}
    assert described["email"] == "source column `Email`; policy: hash (objects.Contact.column_policies)"
    assert described["mobilephone"] == "source column `MobilePhone`; policy: mask (rule '*Phone')"
    assert described["name"] == "source column `Name`"


def test_hash_follows_rfc_4231_for_a_key_longer_than_a_block():
    # RFC 4231, test case 6: a 131-byte key is hashed first.
    digest = hash_values(pa.array(["Test Using Larger Than Block-Size Key - Hash Key First"]), b"\xaa" * 131)
    assert digest.to_pylist() == ["60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"]


def test_hash_equals_python_hmac_over_many_values_in_order():
    """Over several of the record batches DuckDB hashes on threads of their own: every digest in its place."""
    values = [f"user{i}@exämple{i % 7}.com" if i % 11 else "" for i in range(HASH_BATCH_ROWS * 4 + 123)]
    expected = [hmac.new(KEY, v.encode(), hashlib.sha256).hexdigest() if v else v for v in values]
    assert hash_values(pa.chunked_array([values[:2_500], values[2_500:]]).combine_chunks(), KEY).to_pylist() == expected
