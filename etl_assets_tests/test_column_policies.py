"""Column policies on raw text batches: what each policy writes, which policy a column gets, and refusals."""

import hashlib
import hmac

import pyarrow as pa
import pytest

from etl_assets.landing.column_policies import (
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
    with pytest.raises(PolicyError, match=r"objects\.Account\.column_policies\.id: the merge compares"):
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
