"""Checks documents against the ECS and OCSF definitions in tests/reference/
(copied unchanged from the upstream tags; see its README.md).

check_ecs(doc) and check_ocsf(doc) return a list of problems (empty: the
document conforms), field by field:
- ECS 9.4.0 (fields.csv): every leaf is an ECS field, or under our own
  namespace mtls_audit.*; its value has the field's type (keyword: a
  string, long: an integer, date: an RFC 3339 text, ip: an address,
  boolean: true/false, ...); a field ECS normalises to an array is an array
  and no other is; @timestamp and ecs.version are present.
- OCSF 1.8.0: class_uid names a class of the reference (3002 Authentication,
  4002 HTTP Activity, 0 Base Event); every attribute is one of the class's
  (its own, its extends chain up to base_event, and those of the profiles
  metadata.profiles lists) or of the object's (with its extends chain);
  its type is the dictionary's (objects recursively; integer_t, long_t,
  timestamp_t: integers; string_t: strings; ip_t: an address; enum ids of
  the attribute: valid ids only); arrays are arrays; every "required"
  attribute of the class, the listed profiles and each object is present;
  objects' at_least_one constraints hold; category_uid, type_uid agree with
  the class.  unmapped is OCSF's free-form object; its "tls" member (the
  TLS object Authentication has no attribute for) is checked as OCSF's tls.
"""
import csv
import datetime
import ipaddress
import json
import os
import re

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
REF = os.path.join(TOP, "tests", "reference")
ECS_DIR = os.path.join(REF, "ecs-9.4.0")
OCSF_DIR = os.path.join(REF, "ocsf-1.8.0")
CUSTOM = "mtls_audit"

_cache = {}


def _need(path):
    if not os.path.exists(path):
        raise AssertionError(
            "reference file missing: %s (tests/reference/ holds the ECS "
            "and OCSF definitions the SIEM tests check against; restore "
            "it from the upstream tag, see tests/reference/README.md)"
            % path)
    return path


def _json(rel):
    if rel not in _cache:
        with open(_need(os.path.join(OCSF_DIR, rel))) as f:
            _cache[rel] = json.load(f)
    return _cache[rel]


def ecs_fields():
    if "ecs" not in _cache:
        fields = {}
        with open(_need(os.path.join(ECS_DIR, "fields.csv"))) as f:
            for row in csv.DictReader(f):
                fields[row["Field"]] = (row["Type"],
                                        "array" in row["Normalization"])
        _cache["ecs"] = fields
    return _cache["ecs"]


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_ip(v):
    try:
        ipaddress.ip_address(v)
        return True
    except (ValueError, TypeError):
        return False


def _ecs_value(name, etype, v):
    if etype in ("keyword", "constant_keyword", "wildcard", "text",
                 "match_only_text"):
        return isinstance(v, str)
    if etype in ("long", "integer", "short", "byte", "unsigned_long"):
        return _is_int(v)
    if etype in ("float", "double", "scaled_float", "half_float"):
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if etype == "boolean":
        return isinstance(v, bool)
    if etype == "ip":
        return isinstance(v, str) and _is_ip(v)
    if etype == "date":
        if not isinstance(v, str) or not RFC3339.match(v):
            return False
        datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return True
    return False        # object, nested, flattened, geo_point: not ours


def _leaves(doc, prefix=""):
    for k, v in doc.items():
        name = prefix + k
        if isinstance(v, dict):
            yield from _leaves(v, name + ".")
        else:
            yield name, v


def check_ecs(doc):
    fields = ecs_fields()
    bad = []
    if not isinstance(doc, dict):
        return ["not an object"]
    assert CUSTOM not in {f.split(".")[0] for f in fields}, \
        "%s is an ECS field set" % CUSTOM
    for name, v in _leaves(doc):
        if name.startswith(CUSTOM + "."):
            items = v if isinstance(v, list) else [v]
            if any(isinstance(i, (dict, list)) or i is None for i in items):
                bad.append("%s: %r is not a scalar or array of scalars"
                           % (name, v))
            continue
        if name not in fields:
            bad.append("%s: not an ECS %s field" % (name, "9.4.0"))
            continue
        etype, is_array = fields[name]
        if is_array != isinstance(v, list):
            bad.append("%s: %s an array in ECS, got %r"
                       % (name, "is" if is_array else "is not", v))
            continue
        for item in (v if is_array else [v]):
            if not _ecs_value(name, etype, item):
                bad.append("%s: %r is not of ECS type %s"
                           % (name, item, etype))
    for name in ("@timestamp", "ecs.version"):
        if name not in dict(_leaves(doc)):
            bad.append("%s: required by ECS, missing" % name)
    return bad


# ---------------------------------------------------------------- OCSF

def _dictionary():
    return _json("dictionary.json")


def _merge_attrs(into, attrs, base_dir):
    """attrs (an events' or objects' "attributes") into into, with
    $include profiles; later definitions refine earlier ones and enums
    add up."""
    for name, a in attrs.items():
        if name == "$include":
            for inc in (a if isinstance(a, list) else [a]):
                _merge_attrs(into, _json(inc)["attributes"], base_dir)
            continue
        cur = dict(into.get(name, {}))
        enum = dict(cur.get("enum", {}))
        enum.update(a.get("enum", {}))
        cur.update(a)
        if enum:
            cur["enum"] = enum
        into[name] = cur


CLASS_FILES = {
    0: "events/base_event.json",
    3002: "events/iam/authentication.json",
    4002: "events/network/http_activity.json",
}
PARENT_FILES = {
    "base_event": "events/base_event.json",
    "iam": "events/iam/iam.json",
    "network": "events/network/network.json",
}


def ocsf_class(uid):
    """(attributes, profiles, category uid) of class uid: its own, its
    extends chain's, without the profiles' (added per document)."""
    rel = CLASS_FILES.get(uid)
    if rel is None:
        raise AssertionError("class_uid %r: not a class of the reference "
                             "(%s)" % (uid, sorted(CLASS_FILES)))
    chain, profiles = [], []
    cur = _json(rel)
    category = cur.get("category")
    while True:
        chain.append(cur)
        profiles += cur.get("profiles", [])
        category = category or cur.get("category")
        ext = cur.get("extends")
        if not ext:
            break
        cur = _json(PARENT_FILES[ext])
    attrs = {}
    for c in reversed(chain):
        own = {k: v for k, v in c["attributes"].items() if k != "$include"}
        _merge_attrs(attrs, own, "")
    cats = _json("categories.json")["attributes"]
    cat_uid = cats[category]["uid"] if category in cats else 0
    return attrs, profiles, cat_uid, _json(rel)


def ocsf_profile(name):
    return _json("profiles/%s.json" % name)["attributes"]


def ocsf_object(name):
    """Attributes and constraints of object name, with its extends chain
    and $include profiles."""
    key = "obj:" + name
    if key in _cache:
        return _cache[key]
    chain = []
    cur = _json("objects/%s.json" % name)
    while True:
        chain.append(cur)
        ext = cur.get("extends")
        if not ext:
            break
        cur = _json("objects/%s.json" % ext)
    attrs, constraints = {}, {}
    for c in reversed(chain):
        own = {k: v for k, v in c.get("attributes", {}).items()
               if k != "$include"}
        _merge_attrs(attrs, own, "")
        for k, v in c.get("constraints", {}).items():
            constraints[k] = v
    _cache[key] = (attrs, constraints)
    return _cache[key]


SCALARS = {
    "string_t": lambda v: isinstance(v, str),
    "integer_t": _is_int,
    "long_t": _is_int,
    "float_t": lambda v: isinstance(v, (int, float))
    and not isinstance(v, bool),
    "boolean_t": lambda v: isinstance(v, bool),
    "json_t": lambda v: True,
}


def _attr_def(name, local):
    d = dict(_dictionary()["attributes"].get(name, {}))
    enum = dict(d.get("enum", {}))
    enum.update(local.get("enum", {}))
    d.update(local)
    if enum:
        d["enum"] = enum
    return d


def _check_value(path, name, a, v, bad):
    t = a.get("type")
    if t is None:
        bad.append("%s: no type in the dictionary" % path)
        return
    if a.get("is_array"):
        if not isinstance(v, list):
            bad.append("%s: an array in OCSF, got %r" % (path, v))
            return
        items = v
    else:
        if isinstance(v, list):
            bad.append("%s: not an array in OCSF, got %r" % (path, v))
            return
        items = [v]
    types = _dictionary()["types"]["attributes"]
    for i in items:
        if t == "object":        # free-form (unmapped)
            if not isinstance(i, dict):
                bad.append("%s: %r is not an object" % (path, i))
            elif name == "unmapped" and "tls" in i:
                _check_object(path + ".tls", "tls", i["tls"], bad)
            continue
        if t in types or t in SCALARS:
            base = types.get(t, {}).get("type", t)
            ok = SCALARS.get(base, SCALARS.get(t))
            if ok is None:
                bad.append("%s: unknown type %s" % (path, t))
            elif not ok(i):
                bad.append("%s: %r is not %s" % (path, i, t))
            elif t == "ip_t" and not _is_ip(i):
                bad.append("%s: %r is not an IP address" % (path, i))
            elif "range" in types.get(t, {}):
                lo, hi = types[t]["range"]
                if not lo <= i <= hi:
                    bad.append("%s: %r out of %s's range" % (path, i, t))
            if "enum" in a and str(i) not in a["enum"]:
                bad.append("%s: %r is not one of %s" % (path, i,
                                                        sorted(a["enum"])))
            continue
        _check_object(path, t, i, bad)


def _check_members(path, obj, attrs, bad, extra=()):
    for name, v in obj.items():
        if name not in attrs:
            bad.append("%s%s: not an attribute here" % (path, name))
            continue
        _check_value(path + name, name, _attr_def(name, attrs[name]), v,
                     bad)
    for name, a in attrs.items():
        if a.get("requirement") == "required" and name not in obj:
            bad.append("%s%s: required, missing" % (path, name))


def _check_object(path, objname, v, bad):
    if not isinstance(v, dict):
        bad.append("%s: %r is not an object (%s)" % (path, v, objname))
        return
    attrs, constraints = ocsf_object(objname)
    _check_members(path + ".", v, attrs, bad)
    one = constraints.get("at_least_one")
    if one and not any(k in v for k in one):
        bad.append("%s: %s needs one of %s" % (path, objname, one))
    one = constraints.get("just_one")
    if one and sum(k in v for k in one) != 1:
        bad.append("%s: %s needs exactly one of %s" % (path, objname, one))


def check_ocsf(doc):
    bad = []
    if not isinstance(doc, dict):
        return ["not an object"]
    uid = doc.get("class_uid")
    attrs, profiles, cat_uid, cls = ocsf_class(uid)
    if uid:             # base_event's enums of these are Base Event's own
        for name in ("class_uid", "category_uid"):
            attrs[name] = {k: v for k, v in attrs[name].items()
                           if k != "enum"}
    used = doc.get("metadata", {}).get("profiles", [])
    for p in used:
        if p not in profiles:
            bad.append("metadata.profiles: %s is not a profile of class %s"
                       % (p, uid))
            continue
        _merge_attrs(attrs, ocsf_profile(p), "")
    _check_members("", doc, attrs, bad)
    if doc.get("category_uid") != cat_uid:
        bad.append("category_uid: %r, the class's category is %r"
                   % (doc.get("category_uid"), cat_uid))
    want = cat_uid * 1000 + cls.get("uid", 0) if uid else 0
    if uid != want:
        bad.append("class_uid: %r, the reference's is %r" % (uid, want))
    if _is_int(doc.get("activity_id")) and \
            doc.get("type_uid") != uid * 100 + doc["activity_id"]:
        bad.append("type_uid: %r is not class_uid * 100 + activity_id"
                   % doc.get("type_uid"))
    one = cls.get("constraints", {}).get("at_least_one")
    if one and not any(k in doc for k in one):
        bad.append("class %s needs one of %s" % (uid, one))
    if doc.get("metadata", {}).get("version") != "1.8.0":
        bad.append("metadata.version: not 1.8.0")
    return bad
