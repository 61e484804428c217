"""Deterministic, realistic Salesforce differential backups for demos, tests and benchmarks.

Values are generated column by column for chunks of records and streamed to disk
with `csv.writer`, so millions of rows need little memory and pure Python stays
fast. Every random choice comes from `random.Random` seeded with a string built
from the arguments, so the same arguments always give byte-identical files.
"""

from __future__ import annotations

import bisect
import csv
import datetime
import random
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import islice
from pathlib import Path
from string import ascii_lowercase, ascii_uppercase, digits

from etl_assets.salesforce.catalog import CatalogColumn, SalesforceObject, load_catalog
from etl_assets.warehouse.spec import ColumnType

KEY_PREFIXES = {
    "Task": "00T", "User": "005", "Account": "001", "Contact": "003", "Opportunity": "006",
    "Case": "500", "Lead": "00Q", "litify_pm__Matter__c": "a0A", "litify_pm__Intake__c": "a0B",
    "litify_pm__Role__c": "a0C", "UserRole": "00E", "Profile": "00e",
}
POOL_LIMITS = {"User": 50, "UserRole": 12, "Profile": 6}  # small orgs: 50 users, a dozen roles
DRIFT_COLUMN = "Legacy_Reference__c"
CHUNK_ROWS = 4096
NEW, UPDATE, DELETE = "new", "update", "delete"

_BASE62 = digits + ascii_uppercase + ascii_lowercase
_PAIRS = [a + b for a in _BASE62 for b in _BASE62]
_CHECKSUM = ascii_uppercase + "012345"
_UPPER_BITS = str.maketrans(_BASE62, "0" * 10 + "1" * 26 + "0" * 26)
_CLOCK = [f"T{h:02d}:{m:02d}:{s:02d}.000Z" for h in range(24) for m in range(60) for s in range(60)]


def salesforce_id(key_prefix: str, number: int) -> str:
    """18-character Salesforce Id: 3-char key prefix + 12 base-62 digits of number = 15 chars,
    plus the real 3-char case-safe checksum suffix."""
    if len(key_prefix) != 3 or key_prefix.strip(_BASE62):
        raise ValueError(f"key prefix must be 3 base-62 characters, got {key_prefix!r}")
    if not 0 <= number < 62**12:
        raise ValueError(f"record number {number} does not fit in 12 base-62 digits")
    return _sfid(key_prefix, number)


def _upper_bits(chars: str) -> int:
    """Bit i set when character i is upper case: the checksum's rule for one 5-character chunk."""
    return int(chars[::-1].translate(_UPPER_BITS) or "0", 2)


@lru_cache(maxsize=4096)
def _id_head(prefix: str, high: int) -> tuple[str, str, int]:
    """The first 13 characters, the first two checksum characters and the third chunk's bits so far."""
    head = prefix + "".join(_BASE62[high // 62**k % 62] for k in range(9, -1, -1))
    return head, _CHECKSUM[_upper_bits(head[0:5])] + _CHECKSUM[_upper_bits(head[5:10])], _upper_bits(head[10:13])


_PAIR_BITS = [_upper_bits(pair) << 3 for pair in _PAIRS]


def _sfid(prefix: str, number: int) -> str:
    """Ids of consecutive records share their first 13 characters, so those are cached."""
    head, checksum, bits = _id_head(prefix, number // 3844)
    low = number % 3844
    return head + _PAIRS[low] + checksum + _CHECKSUM[bits | _PAIR_BITS[low]]


class _Dates(dict):
    """Day ordinal -> 'YYYY-MM-DD', computed once per day: formatting dates is a hot spot."""

    def __missing__(self, ordinal: int) -> str:
        text = self[ordinal] = datetime.date.fromordinal(ordinal).isoformat()
        return text


_DATES = _Dates()
_date = _DATES.__getitem__


def _stamp(t: int) -> str:
    """Seconds since day 0 of the proleptic calendar -> `2024-05-01T12:34:56.000Z`."""
    return _DATES[t // 86400] + _CLOCK[t % 86400]


def _key_prefix(api_name: str) -> str:
    """The real key prefix, or a stable custom-object one for objects catalogued later."""
    return KEY_PREFIXES.get(api_name) or "a1" + _BASE62[zlib.crc32(api_name.encode()) % 62]


@lru_cache(maxsize=64)
def _pool(targets: tuple[str, ...], size: int) -> tuple[str, ...]:
    """Ids of the first records of each target object: what a reference plausibly points at."""
    return tuple(_sfid(_key_prefix(t), i) for t in targets for i in range(min(size, POOL_LIMITS.get(t, size))))


@lru_cache(maxsize=None)
def _ascii(text: str) -> str:
    """Names as they appear in e-mail addresses and user names."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())


_FIRST = ("James", "Mary", "Robert", "Patricia", "John", "Jennifer", "Michael", "Linda", "David", "Elizabeth",
          "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas", "Sarah", "Carlos", "María",
          "José", "Ana", "Luis", "Sofía", "Wei", "Mei", "Hiroshi", "Yuki", "Aisha", "Omar", "Fatima", "Ahmed",
          "Priya", "Raj", "Zoë", "Renée", "Siobhán", "Björn", "Chloé", "DeShawn", "Latoya", "Keisha", "Ngozi",
          "Kwame", "Olga", "Dmitri", "Anh", "Minh", "Grace", "Mary Ellen")
_LAST = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
         "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
         "Lee", "Pérez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
         "O'Brien", "O'Connor", "McDonald", "Nguyen", "Nguyễn", "Kim", "Patel", "Shah", "Chen", "Wang", "Müller",
         "Schröder", "Kowalski", "Okafor", "Mensah", "Ivanova", "Van der Berg", "St. James", "Smith-Jones", "D'Angelo")
_PLACES = (("Atlanta", "GA", "303"), ("Miami", "FL", "331"), ("Tampa", "FL", "336"), ("Houston", "TX", "770"),
           ("Dallas", "TX", "752"), ("Phoenix", "AZ", "850"), ("Chicago", "IL", "606"), ("Los Angeles", "CA", "900"),
           ("San Diego", "CA", "921"), ("New York", "NY", "100"), ("Denver", "CO", "802"), ("Seattle", "WA", "981"),
           ("Boston", "MA", "021"), ("Philadelphia", "PA", "191"), ("Charlotte", "NC", "282"),
           ("Winston-Salem", "NC", "271"), ("Nashville", "TN", "372"), ("Las Vegas", "NV", "891"),
           ("Columbus", "OH", "432"), ("Detroit", "MI", "482"), ("St. Louis", "MO", "631"), ("Coeur d'Alene", "ID", "838"))
_STREETS = ("Main", "Oak", "Peachtree", "Maple", "Cedar", "Elm", "Washington", "Lake", "Hill", "Park", "Pine",
            "Martin Luther King Jr.", "Sunset", "Broad", "Market", "Church", "River", "Highland", "Ponce de León")
_CASE_TYPES = ("Auto Accident", "Slip and Fall", "Medical Malpractice", "Workers' Compensation",
               "Product Liability", "Dog Bite", "Wrongful Death", "Truck Accident", "Premises Liability")
_PROVIDERS = ("Grady Memorial", "St. Joseph's Hospital", "Northside Urgent Care", "Peachtree Orthopedics",
              "Dr. Alvarez, DC", "Mercy Medical Center", "Elite Physical Therapy, LLC")
_DOCS = ("retainer agreement", "HIPAA authorization", "police report", "medical records", "demand letter",
         "settlement statement", "interrogatories", "deposition transcript", "lien letter", "declarations page")
_TOPICS = ("policy limits", "treatment status", "settlement offer", "missing records", "mediation date",
           "property damage", "rental car", "lost wages", "next steps", "signed documents")
_SENTENCES = (
    'Client called asking about the status of the claim; said the adjuster "never called back".',
    "Left voicemail at {phone}, will try again tomorrow morning.",
    'Per {first}: "Please send the {doc} by Friday, not Monday."',
    "Received {pages} pages of medical records from {provider}, several illegible.",
    "Opposing counsel requested a 30-day extension; agreed, subject to client approval.",
    "Police report #{num} requested from {city} PD.",
    "Client was rear-ended on {street}, {city}, and treated at {provider}.",
    'Carrier offered ${amount}, client said it is "not even close".',
    "Deposition set for {date} at 10:00 AM, court reporter confirmed.",
    "Sent HIPAA authorization, W-9, and intake packet via DocuSign.",
    "Spoke with {first} {last} at {company}, who will call back with the {topic}.",
    "Client's daughter, {first}, is the point of contact and prefers text over e-mail.",
    "Demand letter drafted; needs attorney review before it goes out.",
    "Reminder: statute of limitations runs {date}.",
    "Lien amount confirmed at ${amount} (Medicare).",
    "No answer, mailbox full.",
    'Intake note: caller said "I slipped on a wet floor, there was no sign posted."',
    "Client uploaded photos of the vehicle (front bumper, driver's door) to the portal.",
)
_SUBJECTS = ("Call with {first} {last} re: {topic}", "Follow up: {topic}", "Email from {first} {last}",
             "Send {doc} to {first} {last}", "Review {doc}", "Left voicemail for {first}",
             "Schedule deposition – {first} {last}", "Intake call: {case_type}", "RE: {topic}, {doc}",
             'Client asked about "{topic}"', "Request {doc} from {provider}")
_COMPANY_WORDS = ("Summit", "Peachtree", "Harbor", "Pinnacle", "Blue Ridge", "Lakeside", "Keystone", "Sunbelt")
_COMPANY_NOUNS = ("Logistics", "Insurance", "Trucking", "Construction", "Medical Group", "Properties", "Foods")
_COMPANY_SUFFIX = ("Inc.", ", Inc.", "LLC", "Co.", "Group", "Holdings, LLC", "Corp.")


class _Text:
    """Pools of long text built once per seed; picking from a pool is far cheaper than composing per row."""

    def __init__(self, seed: int):
        rng = random.Random(f"{seed}:text")
        self.companies = tuple(self._company(rng) for _ in range(500))
        self.streets = tuple(self._street(rng) for _ in range(500))
        self.subjects = tuple(rng.choice(_SUBJECTS).format(**self._fields(rng)) for _ in range(1000))
        self.descriptions = tuple(self._description(rng) for _ in range(1000))

    @staticmethod
    def _company(rng: random.Random) -> str:
        suffix = rng.choice(_COMPANY_SUFFIX)
        glue = "" if suffix.startswith(",") else " "
        if rng.random() < 0.4:
            return f"{rng.choice(_LAST)}, {rng.choice(_LAST)} & {rng.choice(_LAST)} LLP"
        return f"{rng.choice(_COMPANY_WORDS)} {rng.choice(_COMPANY_NOUNS)}{glue}{suffix}"

    @staticmethod
    def _street(rng: random.Random) -> str:
        street = f"{rng.randint(1, 9999)} {rng.choice(_STREETS)} {rng.choice(('St', 'Ave', 'Rd', 'Blvd', 'Dr NE'))}"
        extra = rng.random()
        if extra < 0.15:
            return f"{street}\nSuite {rng.randint(100, 950)}"
        return f"{street}, Apt {rng.randint(1, 40)}{rng.choice('ABCD')}" if extra < 0.25 else street

    def _fields(self, rng: random.Random) -> dict[str, str]:
        when = datetime.date(2024, 1, 1) + datetime.timedelta(rng.randint(0, 700))
        return {
            "first": rng.choice(_FIRST), "last": rng.choice(_LAST), "phone": _phone(rng.random),
            "provider": rng.choice(_PROVIDERS), "pages": str(rng.randint(3, 400)),
            "num": str(rng.randint(10**6, 10**7)), "city": rng.choice(_PLACES)[0],
            "street": rng.choice(_STREETS) + " St", "amount": f"{rng.randint(5, 250) * 500:,}",
            "date": f"{when:%m/%d/%Y}", "company": rng.choice(self.companies), "doc": rng.choice(_DOCS),
            "topic": rng.choice(_TOPICS), "case_type": rng.choice(_CASE_TYPES),
        }

    def _description(self, rng: random.Random) -> str:
        fields = self._fields(rng)
        parts = [rng.choice(_SENTENCES).format(**fields) for _ in range(rng.randint(1, 5))]
        text = "".join(part + rng.choice((" ", " ", "\n", "\n\n")) for part in parts).strip()
        if rng.random() < 0.25:
            text += f"\n\nNext steps:\n- {rng.choice(_DOCS)}\n- call {fields['first']} re: {rng.choice(_TOPICS)}"
        if rng.random() < 0.15:
            text += f"\n-- {fields['first']} {fields['last']}, Paralegal"
        return text


_text = lru_cache(maxsize=8)(_Text)


def _phone(r: Callable[[], float]) -> str:
    return f"({int(r() * 800) + 200}) 555-{int(r() * 10000):04d}"


class _Chunk:
    """One batch of records, generated column by column on demand so that a column can read
    the columns it depends on (IsClosed from Status) whatever their catalog order."""

    def __init__(self, obj: SalesforceObject, records: list[tuple[int, int, str]], day: datetime.date,
                 rng: random.Random, pool: int, text: _Text):
        self.obj, self.rng, self.pool, self.text, self.n = obj, rng, pool, text, len(records)
        self.day = day.toordinal()
        self.index = [r[0] for r in records]
        self.kind = [r[2] for r in records]
        self.salt = zlib.crc32(obj.api_name.encode())
        self._columns = {c.api_name: c for c in obj.columns}
        self._values: dict[str, list] = {}
        r, salt, today, end = rng.random, self.salt, self.day * 86400, self.day * 86400 + 86399
        # CreatedDate depends only on the record, so every later version of it repeats it.
        self.created = [o * 86400 + 21600 + ((i * 2654435761 + salt) & 0xFFFFFFFF) % 46800 for i, o, _ in records]
        self.modified = [min(end, c + (0 if r() < 0.4 else int(r() * 10800))) if k == NEW
                         else today + 21600 + int(r() * 57600) for c, k in zip(self.created, self.kind)]
        self.stamp = [m if r() < 0.7 else min(end, m + int(r() * 600)) for m in self.modified]

    def __getitem__(self, name: str) -> list:
        values = self._values.get(name)
        if values is None:
            values = self._values[name] = self._checked(self._columns.get(name), _generate(self, name))
        return values

    def memo(self, key: str, make: Callable[[], list]) -> list:
        if key not in self._values:
            self._values[key] = make()
        return self._values[key]

    def _checked(self, column: CatalogColumn | None, values: list) -> list:
        """Hold generated values to the catalog's rules, so catalog edits cannot yield invalid samples."""
        if column is None:
            return values
        if not column.nullable and "" in values:
            values = [v or f for v, f in zip(values, _by_type(self, column, blank=0.0))]
        limit = column.checks.get("max_length")
        if limit and max(map(len, values), default=0) > limit:
            values = [v[:limit] for v in values]
        allowed = column.checks.get("isin")
        if allowed is not None and not set(values) <= set(allowed) | {""}:
            raise ValueError(f"{self.obj.api_name}.{column.api_name}: generated {sorted(set(values) - set(allowed))}")
        return values

    def pick(self, options: Sequence[str], blank: float = 0.0) -> list[str]:
        return self.rng.choices(_with_blanks(tuple(options), blank) if blank else options, k=self.n)

    def ref(self, *targets: str, blank: float = 0.0) -> list[str]:
        return self.pick(_pool(targets, self.pool), blank)

    def chance(self, p: float) -> list[bool]:
        r = self.rng.random
        return [r() < p for _ in range(self.n)]

    def ints(self, low: int, high: int, blank: float = 0.0) -> list[str]:
        r, span = self.rng.random, high - low + 1
        return ["" if r() < blank else str(low + int(r() * span)) for _ in range(self.n)]

    def amounts(self, low: float, high: float, blank: float = 0.0) -> list[str]:
        """Log-uniform, like real money: many small values, a few large ones."""
        r, ratio = self.rng.random, high / low
        return ["" if r() < blank else f"{min(high, low * ratio ** r()):.2f}" for _ in range(self.n)]

    def dates(self, first: int, last: int, blank: float = 0.0) -> list[str]:
        """Dates between `first` and `last` days from the folder's day."""
        r, base, span = self.rng.random, self.day + first, last - first + 1
        return ["" if r() < blank else _date(base + int(r() * span)) for _ in range(self.n)]

    def stamps(self, times: Iterable[int], keep: Iterable[bool] | None = None) -> list[str]:
        if keep is None:
            return [_DATES[t // 86400] + _CLOCK[t % 86400] for t in times]
        return [_DATES[t // 86400] + _CLOCK[t % 86400] if k else "" for t, k in zip(times, keep)]

    def names(self) -> list[str]:
        return [f"{a} {b}" if a else b for a, b in zip(self["FirstName"], self["LastName"])]


@lru_cache(maxsize=256)
def _with_blanks(options: tuple[str, ...], blank: float) -> tuple[str, ...]:
    """Options padded with '' so that one uniform pick is blank with probability `blank`."""
    return options + ("",) * round(len(options) * blank / (1 - blank))


def _flags(values: Iterable[bool]) -> list[str]:
    return ["true" if v else "false" for v in values]


def _when(keep: Iterable[bool], values: Iterable[str]) -> list[str]:
    return [v if k else "" for k, v in zip(keep, values)]


def _by_type(c: _Chunk, column: CatalogColumn, blank: float = 0.1) -> list[str]:
    """Fallback for columns without a dedicated generator (e.g. newly catalogued ones)."""
    checks, type_ = column.checks, column.type
    if checks.get("isin"):
        return c.pick([v for v in checks["isin"] if v] or checks["isin"], blank)
    low, high = checks.get("min", 0), checks.get("max")
    if type_ is ColumnType.BOOLEAN:
        return _flags(c.chance(0.5))
    if type_ is ColumnType.INTEGER:
        return c.ints(int(low), int(high if high is not None else low + 1000), blank)
    if type_ is ColumnType.FLOAT:
        return c.amounts(max(float(low), 1.0), float(high if high is not None else max(low, 1) * 10000), blank)
    if type_ is ColumnType.DATE:
        return c.dates(-365, 0, blank)
    if type_ is ColumnType.DATETIME:
        return c.stamps(c.modified, [x >= blank for x in (c.rng.random() for _ in range(c.n))])
    return c.pick(c.text.subjects, blank)


def _address(c: _Chunk, prefix: str, part: str) -> list[str]:
    places = c.memo(prefix + "@place", lambda: c.pick(_PLACES + (("", "", ""),)))
    if part == "Street":
        return _when((p[0] for p in places), c.pick(c.text.streets))
    if part == "PostalCode":
        r = c.rng.random
        return [p[2] and f"{p[2]}{int(r() * 100):02d}" for p in places]
    if part == "Country":
        return [p[0] and "United States" for p in places]
    return [p[0] if part == "City" else p[1] for p in places]


_ADDRESS_PARTS = ("Street", "City", "State", "PostalCode", "Country")

_TASK_STATUS = ("Completed",) * 6 + ("Not Started",) * 3 + ("In Progress",) * 2 + (
    "Waiting on someone else", "Deferred")
_STAGES = {"Prospecting": (10, "Pipeline"), "Qualification": (20, "Pipeline"), "Needs Analysis": (25, "Pipeline"),
           "Proposal/Price Quote": (60, "Best Case"), "Negotiation/Review": (80, "Commit"),
           "Closed Won": (100, "Closed"), "Closed Lost": (0, "Omitted")}
_ROLES = {"Client": ("Injured Party", "Guardian"), "Defendant": ("Driver", "Property Owner", "Employer"),
          "Witness": ("Eyewitness", "Treating Physician"), "Expert": ("Accident Reconstruction", "Economist"),
          "Insurance Adjuster": ("Bodily Injury", "Property Damage"), "Opposing Counsel": ("Lead", "Associate"),
          "Medical Provider": ("Hospital", "Chiropractor", "Physical Therapy")}
_LEAD_SOURCES = ("Web", "Phone Inquiry", "Referral", "Partner Referral", "Advertisement", "Google Ads", "")
_INDUSTRIES = ("Insurance", "Healthcare", "Transportation", "Construction", "Retail", "Legal", "Manufacturing", "")

def _creators(c: _Chunk) -> list[str]:
    """CreatedById depends only on the record, so every later version of it repeats it."""
    users = _pool(("User",), c.pool)
    return [users[(i * 40503 + c.salt) % len(users)] for i in c.index]


_SHARED: dict[str, Callable[[_Chunk], list[str]]] = {
    "Id": lambda c: [_sfid(_key_prefix(c.obj.api_name), i) for i in c.index],
    "IsDeleted": lambda c: ["true" if k == DELETE else "false" for k in c.kind],
    "CreatedDate": lambda c: c.stamps(c.created),
    "LastModifiedDate": lambda c: c.stamps(c.modified),
    "SystemModstamp": lambda c: c.stamps(c.stamp),
    "CreatedById": _creators,
    "LastModifiedById": lambda c: c.ref("User"),
    "OwnerId": lambda c: c.ref("User"),
    "AccountId": lambda c: c.ref("Account", blank=0.15),
    "ContactId": lambda c: c.ref("Contact", blank=0.1),
    "FirstName": lambda c: c.pick(_FIRST, blank=0.03),
    "LastName": lambda c: c.pick(_LAST),
    "Name": _Chunk.names,
    "Salutation": lambda c: c.pick(("Mr.", "Ms.", "Mrs.", "Dr.", "")),
    "Email": lambda c: _when(c.chance(0.85), [
        f"{_ascii(a)[:1]}{_ascii(b)}{i % 100}@{d}" for a, b, i, d in
        zip(c["FirstName"], c["LastName"], c.index, c.pick(("gmail.com", "yahoo.com", "outlook.com", "icloud.com")))]),
    "Phone": lambda c: [_phone(c.rng.random) if keep else "" for keep in c.chance(0.9)],
    "MobilePhone": lambda c: [_phone(c.rng.random) if keep else "" for keep in c.chance(0.6)],
    "Title": lambda c: c.pick(("Owner", "Claims Adjuster", "Office Manager", "VP Operations", "Nurse", "Driver"), 0.3),
    "Description": lambda c: c.pick(c.text.descriptions, blank=0.4),
    "litify_pm__Description__c": lambda c: c.pick(c.text.descriptions, blank=0.3),
    "litify_pm__Comments__c": lambda c: c.pick(c.text.descriptions, blank=0.5),
    "Subject": lambda c: c.pick(c.text.subjects),
    "LeadSource": lambda c: c.pick(_LEAD_SOURCES),
    "Industry": lambda c: c.pick(_INDUSTRIES),
    "Company": lambda c: c.pick(c.text.companies),
    "NumberOfEmployees": lambda c: c.ints(1, 5000, blank=0.3),
    "litify_pm__Client__c": lambda c: c.ref("Account"),
    "litify_pm__Matter__c": lambda c: c.ref("litify_pm__Matter__c", blank=0.1),
    "litify_pm__Case_Type__c": lambda c: c.pick(_CASE_TYPES),
    "litify_pm__Open_Date__c": lambda c: [_date(t // 86400) for t in c.created],
}

_SPECS: dict[str, dict[str, Callable[[_Chunk], list[str]] | tuple[str, ...]]] = {
    "Task": {
        "WhoId": lambda c: c.ref("Contact", "Lead", blank=0.25),
        "WhatId": lambda c: c.ref("Account", "Opportunity", "Case", "litify_pm__Matter__c", blank=0.3),
        "ActivityDate": lambda c: c.dates(-21, 21, blank=0.2),
        "Status": _TASK_STATUS,
        "Priority": ("Normal",) * 6 + ("High", "High", "Low", ""),
        "IsHighPriority": lambda c: _flags(p == "High" for p in c["Priority"]),
        "Description": lambda c: c.pick(c.text.descriptions, blank=0.45),
        "Type": ("Call",) * 4 + ("Email",) * 3 + ("Meeting", "Other", ""),
        "IsClosed": lambda c: _flags(s == "Completed" for s in c["Status"]),
        "AccountId": lambda c: c.ref("Account", blank=0.3),
        "CallDurationInSeconds": lambda c: [str(int(c.rng.random() * 1800)) if t == "Call" else ""
                                            for t in c["Type"]],
        "CallType": lambda c: _when((t == "Call" for t in c["Type"]),
                                    c.pick(("Outbound", "Outbound", "Inbound", "Internal"))),
        "CallDisposition": lambda c: _when((t == "Call" for t in c["Type"]), c.pick(
            ("Left voicemail", "Spoke with client", "No answer", "Wrong number", "Scheduled follow-up, will call back"))),
        "IsReminderSet": lambda c: _flags(c.chance(0.25)),
        "ReminderDateTime": lambda c: [_stamp(m + int(c.rng.random() * 604800)) if s == "true" else ""
                                       for m, s in zip(c.modified, c["IsReminderSet"])],
        "CompletedDateTime": lambda c: c.stamps(c.modified, (s == "Completed" for s in c["Status"])),
        "TaskSubtype": lambda c: [t if t in ("Call", "Email") else "Task" for t in c["Type"]],
        "litify_pm__Matter__c": lambda c: c.ref("litify_pm__Matter__c", blank=0.6),
        "litify_pm__Intake__c": lambda c: c.ref("litify_pm__Intake__c", blank=0.85),
    },
    "User": {
        "FirstName": lambda c: c.pick(_FIRST),
        "Username": lambda c: [f"{_ascii(a)}.{_ascii(b)}.{i}@haleporter.example.com"
                               for a, b, i in zip(c["FirstName"], c["LastName"], c.index)],
        "Email": lambda c: [f"{_ascii(a)}.{_ascii(b)}@haleporter.com" for a, b in zip(c["FirstName"], c["LastName"])],
        "Alias": lambda c: [(_ascii(a)[:1] + _ascii(b))[:8] for a, b in zip(c["FirstName"], c["LastName"])],
        "CompanyName": ("Hale & Porter, LLP",),
        "Division": ("Litigation", "Pre-Litigation", "Intake", "Operations", "Finance"),
        "Department": ("Personal Injury", "Workers' Comp", "Mass Tort", "Administration", "Marketing"),
        "Title": ("Attorney", "Senior Attorney", "Paralegal", "Case Manager", "Intake Specialist", "Legal Assistant"),
        "IsActive": lambda c: _flags(c.chance(0.9)),
        "TimeZoneSidKey": ("America/New_York", "America/New_York", "America/Chicago", "America/Denver",
                           "America/Los_Angeles"),
        "UserRoleId": lambda c: c.ref("UserRole", blank=0.1),
        "ProfileId": lambda c: c.ref("Profile"),
        "UserType": ("Standard",) * 19 + ("PowerPartner",),
        "ManagerId": lambda c: c.ref("User", blank=0.2),
        "LastLoginDate": lambda c: c.stamps(
            (max(cr, c.day * 86400 - int(c.rng.random() * 2592000)) for cr in c.created), c.chance(0.85)),
    },
    "Account": {
        "IsPersonAccount": lambda c: _flags(c.chance(0.35)),
        "Name": lambda c: [f"{c.rng.choice(_FIRST)} {c.rng.choice(_LAST)}" if p == "true" else co
                           for p, co in zip(c["IsPersonAccount"], c.pick(c.text.companies))],
        "Type": ("Customer", "Customer", "Prospect", "Partner", "Vendor", "Other", ""),
        "ParentId": lambda c: c.ref("Account", blank=0.9),
        "Website": lambda c: [f"www.{_ascii(n)[:20]}.com" if p == "false" else ""
                              for p, n in zip(c["IsPersonAccount"], c["Name"])],
        "AnnualRevenue": lambda c: _when((p == "false" for p in c["IsPersonAccount"]),
                                         c.amounts(50000, 5e8, blank=0.2)),
        "NumberOfEmployees": lambda c: _when((p == "false" for p in c["IsPersonAccount"]),
                                             c.ints(1, 20000, blank=0.2)),
    },
    "Contact": {
        "Birthdate": lambda c: c.dates(-85 * 365, -18 * 365, blank=0.3),
        "HasOptedOutOfEmail": lambda c: _flags(c.chance(0.1)),
    },
    "Opportunity": {
        "Name": lambda c: [f"{co} - {t}" for co, t in zip(c.pick(c.text.companies), c.pick(_CASE_TYPES))],
        "StageName": tuple(_STAGES),
        "Amount": lambda c: c.amounts(2500, 1500000, blank=0.1),
        "Probability": lambda c: [f"{_STAGES[s][0]:.2f}" for s in c["StageName"]],
        "CloseDate": lambda c: c.dates(-30, 120),
        "Type": ("New Business", "New Business", "Existing Business", ""),
        "IsClosed": lambda c: _flags(s.startswith("Closed") for s in c["StageName"]),
        "IsWon": lambda c: _flags(s == "Closed Won" for s in c["StageName"]),
        "ForecastCategory": lambda c: [_STAGES[s][1] for s in c["StageName"]],
    },
    "Case": {
        "CaseNumber": lambda c: [f"{i + 1:08d}" for i in c.index],
        "Origin": ("Phone", "Phone", "Email", "Web", "Chat"),
        "Status": ("New", "Working", "Working", "Escalated", "Closed", "Closed"),
        "Reason": ("Billing question", "Document request", "Case status", "Complaint", "Other", ""),
        "Priority": ("Medium", "Medium", "High", "Low"),
        "IsClosed": lambda c: _flags(s == "Closed" for s in c["Status"]),
        "ClosedDate": lambda c: c.stamps(c.modified, (s == "Closed" for s in c["Status"])),
        "IsEscalated": lambda c: _flags(s == "Escalated" for s in c["Status"]),
    },
    "Lead": {
        "Title": ("Owner", "Driver", "Nurse", "Teacher", "Retired", "Student", ""),
        "Status": ("Open - Not Contacted", "Working - Contacted", "Working - Contacted", "Closed - Converted",
                   "Closed - Not Converted"),
        "Rating": ("Hot", "Warm", "Cold", ""),
        "IsConverted": lambda c: _flags(s == "Closed - Converted" for s in c["Status"]),
        "ConvertedDate": lambda c: [_date(m // 86400) if s == "Closed - Converted" else ""
                                    for m, s in zip(c.modified, c["Status"])],
    },
    "litify_pm__Matter__c": {
        "Name": lambda c: [f"MAT-{i + 1:07d}" for i in c.index],
        "litify_pm__Status__c": ("Open", "Pre-Litigation", "Pre-Litigation", "Litigation", "Settled", "Closed"),
        "litify_pm__Close_Date__c": lambda c: [_date(cr // 86400 + int(c.rng.random() * (c.day - cr // 86400 + 1)))
                                               if s in ("Settled", "Closed") else ""
                                               for cr, s in zip(c.created, c["litify_pm__Status__c"])],
        "litify_pm__Incident_date__c": lambda c: [_date(t // 86400 - int(c.rng.random() * 730)) for t in c.created],
        "litify_pm__Principal_Attorney__c": lambda c: c.ref("User", blank=0.05),
        "litify_pm__Total_Matter_Value__c": lambda c: c.amounts(1000, 2500000, blank=0.3),
        "litify_pm__Matter_State__c": lambda c: c.pick([p[1] for p in _PLACES]),
    },
    "litify_pm__Intake__c": {
        "Name": lambda c: [f"INT-{i + 1:07d}" for i in c.index],
        "litify_pm__Status__c": ("Open", "Open", "Under Review", "Converted", "Turned Down", "Referred Out"),
        "litify_pm__Source__c": ("Web Form", "Phone", "Referral", "TV Ad", "Billboard", "Google Ads"),
        "litify_pm__Converted_Date__c": lambda c: c.stamps(
            c.modified, (s == "Converted" for s in c["litify_pm__Status__c"])),
        "litify_pm__Matter__c": lambda c: _when((s == "Converted" for s in c["litify_pm__Status__c"]),
                                                c.ref("litify_pm__Matter__c")),
    },
    "litify_pm__Role__c": {
        "Name": lambda c: [f"R-{i + 1:07d}" for i in c.index],
        "litify_pm__Party__c": lambda c: c.ref("Account"),
        "litify_pm__Role__c": tuple(_ROLES),
        "litify_pm__Subtype__c": lambda c: [c.rng.choice(_ROLES[r]) for r in c["litify_pm__Role__c"]],
    },
}


def _generate(c: _Chunk, name: str) -> list[str]:
    spec = _SPECS.get(c.obj.api_name, {}).get(name) or _SHARED.get(name)
    if isinstance(spec, tuple):
        return c.pick(spec)
    if spec is not None:
        return spec(c)
    part = next((p for p in _ADDRESS_PARTS if name.endswith(p)), None)
    if part is not None:
        return _address(c, name[: -len(part)], part)
    return _by_type(c, c._columns[name])


def _write_csv(path: Path, obj: SalesforceObject, records: Iterable[tuple[int, int, str]], day: datetime.date,
               rng: random.Random, seed: int, pool: int, drift: bool = False) -> int:
    """Stream records (index, creation day ordinal, kind) to one CSV, a chunk at a time."""
    header = [c.api_name for c in obj.columns] + ([DRIFT_COLUMN] if drift else [])
    text, count, records = _text(seed), 0, iter(records)
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(header)
        while batch := list(islice(records, CHUNK_ROWS)):
            chunk = _Chunk(obj, batch, day, rng, pool, text)
            columns = [chunk[c.api_name] for c in obj.columns]
            if drift:
                columns.append(_when(chunk.chance(0.9), (f"LEG-{i % 10**6:06d}" for i in chunk.index)))
            writer.writerows(zip(*columns))
            count += len(batch)
    return count


def _object(api_name: str) -> SalesforceObject:
    catalog = load_catalog()
    if api_name not in catalog:
        raise ValueError(f"{api_name!r} is not in the catalog; catalog objects: {', '.join(catalog)}")
    return catalog[api_name]


def write_object_csv(path: Path, api_name: str, rows: int, seed: int = 7,
                     day: datetime.date = datetime.date(2024, 5, 1), first_index: int = 0) -> int:
    """Write one CSV of `rows` records of `api_name` (header included); return rows written.
    Used by the benchmark."""
    obj, path = _object(api_name), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"{seed}:{day.isoformat()}:{api_name}:{first_index}")
    records = ((i, day.toordinal(), NEW) for i in range(first_index, first_index + rows))
    return _write_csv(path, obj, records, day, rng, seed, pool=1000)


class _History:
    """Which records of one object exist so far, so later folders can update or delete them."""

    def __init__(self) -> None:
        self.count, self.starts, self.days, self.deleted = 0, [], [], set()

    def created_on(self, index: int) -> int:
        return self.days[bisect.bisect_right(self.starts, index) - 1]

    def next_folder(self, rng: random.Random, rows: int, day: datetime.date) -> list[tuple[int, int, str]]:
        """About `rows` records: a quarter updates and a few soft deletes of earlier records, the rest new."""
        n = max(1, rows + rng.randint(-(rows // 10), rows // 10))
        alive = self.count - len(self.deleted)
        updates = min(alive, round(n * 0.25))
        deletes = min(alive - updates, max(1, round(n * 0.03)))
        sampled = rng.sample(range(self.count), min(self.count, updates + deletes + len(self.deleted)))
        touched = [i for i in sampled if i not in self.deleted][: updates + deletes]
        records = [(i, self.created_on(i), UPDATE if k < updates else DELETE) for k, i in enumerate(touched)]
        self.deleted.update(touched[updates:])
        new = n - len(touched)
        self.starts.append(self.count)
        self.days.append(day.toordinal())
        records += [(i, day.toordinal(), NEW) for i in range(self.count, self.count + new)]
        self.count += new
        rng.shuffle(records)
        return records


def generate_sample(root: Path, folders: int = 6, rows: int = 120, seed: int = 7,
                    start: datetime.date = datetime.date(2024, 5, 1),
                    objects: Sequence[str] | None = None, files_per_object: int = 2) -> dict[str, dict[str, int]]:
    """Write `folders` differential folders under root/backup; return {folder_name: {api_name: rows_written}}."""
    catalog = load_catalog()
    for api_name in objects or ():
        _object(api_name)
    names = [name for name in catalog if objects is None or name in objects]
    if folders < 2 or rows < 1 or files_per_object < 1 or not names:
        raise ValueError("need folders >= 2 (one is left empty), rows >= 1, files_per_object >= 1 and an object")
    backup = Path(root) / "backup"
    days = [start + datetime.timedelta(days=i) for i in range(folders)]
    folder_names = [f"{d:%Y%m%d}_Differential" for d in days]
    clashes = [name for name in folder_names if (backup / name).exists()]
    if clashes:
        raise FileExistsError(f"{backup} already holds {', '.join(clashes)}; refusing to mix sample data "
                              "with existing backups: use an empty root or another start date")
    empty = folders // 2 if folders >= 3 else folders - 1  # a quiet day mid-run, which loaders must tolerate
    last = max(i for i in range(folders) if i != empty)
    plan, pool = random.Random(f"{seed}:plan"), max(1, rows * 8 // 10)
    history = {name: _History() for name in names}
    result: dict[str, dict[str, int]] = {}
    for i, (day, folder) in enumerate(zip(days, folder_names)):
        (backup / folder).mkdir(parents=True)
        written = result[folder] = {}
        if i == empty:
            continue
        for j, name in enumerate(names):
            if i > 0 and j > 0 and name != "Task" and (i + j) % 4 == 0:
                continue  # not every object changes every day; the first stays, so only one folder is empty
            records = history[name].next_folder(plan, rows, day)
            rng = random.Random(f"{seed}:{folder}:{name}")
            target = backup / folder / name
            target.mkdir()
            n = len(records)
            written[name] = sum(
                _write_csv(target / f"{name.lower()}_part{k + 1}.csv", catalog[name],
                           records[k * n // files_per_object:(k + 1) * n // files_per_object],
                           day, rng, seed, pool, drift=(i == last and name == "Task"))
                for k in range(files_per_object))
    return result

