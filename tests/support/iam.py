"""IAM as AWS would apply it to template.yaml, offline.

- `transform()`: template.yaml through aws-sam-translator (what CloudFormation's
  AWS::Serverless-2016-10-31 transform does; run in the SAM CLI's venv), with local CodeUri/ContentUri
  replaced by S3 URIs as `sam package` would; SAM policy templates come out expanded.
- `resolve()`: Ref / Fn::GetAtt / Fn::Sub / Fn::Join / Fn::If / Fn::Select of that plain CloudFormation
  for given physical names (tables, bucket, secret ARN, functions): the ARNs an account would see.
- `roles()`: component -> its identity-based policy documents (role inline policies + AWS::IAM::Policy
  resources attached to the role). Managed policies are ignored (only AWSLambdaBasicExecutionRole:
  CloudWatch Logs, which the runtime itself writes, no call of ours).
- `evaluate()`: AWS's evaluation logic for identity policies, for the subset the template uses:
  explicit Deny wins, else an Allow whose Action / NotAction, Resource and Condition match;
  wildcards `*` and `?`; condition operators StringEquals / StringLike / ArnLike / ArnEquals / Bool with
  the ForAllValues: / ForAnyValue: set qualifiers and IfExists; condition keys supplied by the caller
  (dynamodb:LeadingKeys from the request's partition key). Anything outside that subset raises
  (never silently allows). Why not a library: docs/decisions.md ("IAM conformance").
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.aws import TEMPLATE, load_template

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"

#: template component name -> role logical id (after the SAM transform)
COMPONENT_ROLES = {
    "api": "ApiFunctionRole", "stream": "StreamFunctionRole", "cleanup": "CleanupFunctionRole",
    "keepalive": "KeepaliveFunctionRole", "replies_stream": "RepliesStreamFunctionRole",
    "interactions": "InteractionsFunctionRole", "listener": "ListenerTaskRole",
}

DEFAULT_PARAMETERS = {"GuildId": "110000000000000001", "CozeBotId": "120000000000000001",
                      "ListenerImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/cdp-listener:1",
                      "VpcId": "vpc-0123456789abcdef0", "SubnetIds": "subnet-0123456789abcdef0"}


class UnsupportedPolicy(Exception):
    """The policy uses IAM features this evaluator does not model: fail loudly, never allow by accident."""


# -- transform -------------------------------------------------------------------------------------
#: The transform runs in the SAM CLI's own venv (`make sam`), where aws-sam-translator comes with the CLI:
#: as a project dependency it would pin the dev lock's pydantic below the layer's (it requires ~=2.13).
TRANSFORM = r"""
import json, os, sys
from samtranslator.translator.transform import transform

class NoManagedPolicies:  # only the basic logging policies; not loaded (no IAM call)
    def load(self):
        return {}

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
data = json.load(sys.stdin)
json.dump(transform(data["template"], data["parameters"], NoManagedPolicies()), sys.stdout)
"""


def sam_python() -> Path:
    """The interpreter of the SAM CLI's venv (CDP_SAM = path of a `sam` elsewhere); skips the calling test
    when it is missing, except under CI (`make test` installs it)."""
    import os

    sam = Path(os.environ.get("CDP_SAM") or TEMPLATE.parent / ".sam-venv" / "bin" / "sam")
    python = sam.parent / "python"
    if not python.exists():
        import pytest

        if os.environ.get("CI"):
            raise AssertionError(f"{python} missing: `make sam` installs the SAM CLI (and aws-sam-translator)")
        pytest.skip("SAM CLI not installed (make sam)")
    return python


_cache: dict[str, dict[str, Any]] = {}


def transform(template: dict[str, Any] | Path | None = None,
              parameters: dict[str, str] | None = None) -> dict[str, Any]:
    """The SAM template as plain CloudFormation (aws-sam-translator, offline, in the SAM CLI's venv)."""
    import subprocess

    if template is None or isinstance(template, Path):
        template = load_template(template or TEMPLATE)
    t = copy.deepcopy(template)
    for res in t["Resources"].values():
        props = res.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                props[key] = f"s3://rehearsal-artifacts/{props[key].strip('/')}.zip"
    payload = json.dumps({"template": t, "parameters": {**DEFAULT_PARAMETERS, **(parameters or {})}},
                         sort_keys=True)
    if payload not in _cache:
        r = subprocess.run([str(sam_python()), "-c", TRANSFORM], input=payload, capture_output=True, text=True,
                           timeout=120, env={"PATH": "/usr/bin:/bin", "AWS_DEFAULT_REGION": REGION})
        assert r.returncode == 0, f"SAM transform failed: {r.stderr[-3000:]}"
        _cache[payload] = json.loads(r.stdout)
    return copy.deepcopy(_cache[payload])


# -- intrinsic functions ---------------------------------------------------------------------------
@dataclass
class Names:
    """Physical names of the resources (as the test created them) for resolving ARNs."""

    tables: dict[str, str] = field(default_factory=dict)      # logical id -> table name
    buckets: dict[str, str] = field(default_factory=dict)     # logical id -> bucket name
    secrets: dict[str, str] = field(default_factory=dict)     # logical id -> secret ARN
    functions: dict[str, str] = field(default_factory=dict)   # logical id -> function name
    parameters: dict[str, Any] = field(default_factory=dict)

    def ref(self, name: str) -> Any:
        pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": PARTITION,
                  "AWS::URLSuffix": "amazonaws.com", "AWS::StackName": "cdp"}
        for table in (pseudo, self.tables, self.buckets, self.secrets, self.functions, self.parameters):
            if name in table:
                return table[name]
        return f"ref-{name}"  # roles, log groups...: a name no policy of ours matches by accident

    def get_att(self, name: str, attr: str) -> str:
        if name in self.tables:
            arn = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{self.tables[name]}"
            return {"Arn": arn, "StreamArn": f"{arn}/stream/2025-01-01T00:00:00.000"}[attr]
        if name in self.buckets and attr == "Arn":
            return f"arn:{PARTITION}:s3:::{self.buckets[name]}"
        if name in self.functions and attr == "Arn":
            return f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{self.functions[name]}"
        return f"getatt-{name}-{attr}"


def resolve(value: Any, names: Names, conditions: dict[str, bool] | None = None) -> Any:
    if isinstance(value, list):
        return [resolve(v, names, conditions) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, arg), = value.items()
        if key == "Ref":
            return names.ref(arg)
        if key == "Fn::GetAtt":
            name, attr = arg if isinstance(arg, list) else arg.split(".", 1)
            return names.get_att(name, attr)
        if key == "Fn::Sub":
            text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], resolve(arg[1], names, conditions))

            def sub(m: re.Match) -> str:
                expr = m.group(1)
                if expr in extra:
                    return str(extra[expr])
                if "." in expr and not expr.startswith("AWS::"):
                    return str(names.get_att(*expr.split(".", 1)))
                return str(names.ref(expr))
            return re.sub(r"\$\{([^}!]+)\}", sub, text)
        if key == "Fn::Join":
            sep, parts = arg
            return sep.join(str(p) for p in resolve(parts, names, conditions))
        if key == "Fn::Select":
            index, items = resolve(arg, names, conditions)
            return items[int(index)]
        if key == "Fn::Split":
            sep, text = resolve(arg, names, conditions)
            return text.split(sep)
        if key == "Fn::If":
            cond, yes, no = arg
            return resolve(yes if (conditions or {}).get(cond, True) else no, names, conditions)
    return {k: resolve(v, names, conditions) for k, v in value.items()}


def roles(cfn: dict[str, Any], names: Names) -> dict[str, list[dict[str, Any]]]:
    """Role logical id -> its policy documents (resolved)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for lid, res in cfn["Resources"].items():
        if res["Type"] == "AWS::IAM::Role":
            docs = [p["PolicyDocument"] for p in res.get("Properties", {}).get("Policies", [])]
            out.setdefault(lid, []).extend(resolve(docs, names))
    for res in cfn["Resources"].values():
        if res["Type"] == "AWS::IAM::Policy":
            for role in res["Properties"].get("Roles", []):
                rid = role["Ref"] if isinstance(role, dict) else role
                out.setdefault(rid, []).append(resolve(res["Properties"]["PolicyDocument"], names))
    return out


# -- evaluation ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    action: str                       # "dynamodb:PutItem"
    resource: str                     # ARN
    context: tuple[tuple[str, tuple[str, ...]], ...] = ()  # condition keys -> values

    def keys(self) -> dict[str, tuple[str, ...]]:
        return dict(self.context)


def _as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else [v]


def _wild(pattern: str, value: str, *, case: bool = True) -> bool:
    if not case:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


_STRING_OPS = {
    "StringEquals": lambda p, v: p == v, "StringLike": lambda p, v: _wild(p, v),
    "ArnEquals": lambda p, v: p == v, "ArnLike": lambda p, v: _wild(p, v),
    "Bool": lambda p, v: str(p).lower() == str(v).lower(),
}


def _condition_ok(conditions: dict[str, Any], keys: dict[str, tuple[str, ...]]) -> bool:
    for op, entries in conditions.items():
        qualifier, _, base = op.rpartition(":")
        if_exists = base.endswith("IfExists")
        base = base.removesuffix("IfExists")
        if base not in _STRING_OPS or qualifier not in ("", "ForAllValues", "ForAnyValue"):
            raise UnsupportedPolicy(f"condition operator {op}")
        test = _STRING_OPS[base]
        for key, patterns in entries.items():
            patterns = [str(p) for p in _as_list(patterns)]
            values = keys.get(key.lower())
            if values is None:
                if qualifier == "ForAllValues" or if_exists:
                    continue  # AWS: an absent key makes ForAllValues (and ...IfExists) true
                return False
            match = lambda v: any(test(p, v) for p in patterns)  # noqa: E731
            if qualifier == "ForAllValues":
                ok = all(match(v) for v in values)
            else:  # ForAnyValue, or a single-valued key
                ok = any(match(v) for v in values)
            if not ok:
                return False
    return True


def _statement_matches(st: dict[str, Any], req: Request) -> bool:
    if {"Principal", "NotPrincipal", "NotResource"} & st.keys():
        raise UnsupportedPolicy(f"statement keys {sorted(st)}")
    if "Action" in st:
        if not any(_wild(a, req.action, case=False) for a in _as_list(st["Action"])):
            return False
    elif "NotAction" in st:
        if any(_wild(a, req.action, case=False) for a in _as_list(st["NotAction"])):
            return False
    else:
        raise UnsupportedPolicy("statement without Action")
    if not any(_wild(str(r), req.resource) for r in _as_list(st.get("Resource", []))):
        return False
    return _condition_ok(st.get("Condition", {}), {k.lower(): v for k, v in req.keys().items()})


def statements(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [st for doc in documents for st in _as_list(doc.get("Statement", []))]


def evaluate(documents: list[dict[str, Any]], req: Request) -> tuple[bool, list[int]]:
    """(allowed, indexes of the Allow statements that match) for one request, AWS's way for identity
    policies: an explicit Deny wins; else allowed iff some Allow matches; else implicit deny."""
    sts = statements(documents)
    if any(st.get("Effect") == "Deny" and _statement_matches(st, req) for st in sts):
        return False, []
    allowing = [i for i, st in enumerate(sts) if st.get("Effect") == "Allow" and _statement_matches(st, req)]
    return bool(allowing), allowing


# -- recorded calls -> requests --------------------------------------------------------------------
#: botocore operation -> IAM action, where the names differ (everything else: service:Operation)
ACTION_NAMES = {("s3", "HeadObject"): "s3:GetObject", ("lambda", "Invoke"): "lambda:InvokeFunction"}
#: operations that need no permission of ours (presigning is local; STS identity is always allowed)
FREE = {("sts", "GetCallerIdentity")}


def request_of(call: dict[str, Any], names: Names) -> Request | None:
    service, op = call["service"], call["operation"]
    if (service, op) in FREE:
        return None
    action = ACTION_NAMES.get((service, op), f"{service}:{op}")
    ctx: dict[str, tuple[str, ...]] = {}
    if service == "dynamodb":
        arn = f"arn:{PARTITION}:dynamodb:{REGION}:{ACCOUNT}:table/{call['table']}"
        if call.get("index"):
            arn += f"/index/{call['index']}"
        if call.get("leading_keys") is not None:
            ctx["dynamodb:LeadingKeys"] = tuple(call["leading_keys"])
    elif service == "s3":
        arn = f"arn:{PARTITION}:s3:::{call['bucket']}" + (f"/{call['key']}" if call.get("key") else "")
    elif service == "secretsmanager":
        arn = call["secret"]
        if not arn.startswith("arn:"):
            arn = names.secrets.get(arn, arn)
    elif service == "lambda":
        fn = call["function"]
        arn = fn if fn.startswith("arn:") else f"arn:{PARTITION}:lambda:{REGION}:{ACCOUNT}:function:{fn}"
    else:
        arn = "*"
    return Request(action, arn, tuple(sorted(ctx.items())))


@dataclass
class Verdict:
    denied: list[tuple[str, dict[str, Any]]]          # (component, call)
    unused: dict[str, list[str]]                      # component -> granted statements never used
    checked: int
    summary: dict[str, dict[str, int]] = field(default_factory=dict)  # component -> "service:Op" -> count

    def report(self) -> str:
        lines = [f"{self.checked} AWS calls checked against their component's role"]
        for comp, ops in sorted(self.summary.items()):
            lines.append(f"calls   {comp}: " + ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())))
        for comp, call in self.denied:
            lines.append(f"DENIED  {comp}: {json.dumps(call, sort_keys=True)}")
        for comp, unused in sorted(self.unused.items()):
            for u in unused:
                lines.append(f"unused  {comp}: {u}")
        return "\n".join(lines)


def check(calls: list[dict[str, Any]], cfn: dict[str, Any], names: Names) -> Verdict:
    role_docs = roles(cfn, names)
    denied: list[tuple[str, dict[str, Any]]] = []
    used: dict[str, set[tuple[int, str]]] = {}  # component -> (statement index, action) that allowed a call
    seen: set[str] = set()
    for call in calls:
        comp = call["component"]
        role = COMPONENT_ROLES[comp]
        if role not in role_docs:
            denied.append((comp, {**call, "why": f"no role {role} in the template"}))
            continue
        req = request_of(call, names)
        if req is None:
            continue
        seen.add(comp)
        ok, allowing = evaluate(role_docs[role], req)
        if ok:
            sts = statements(role_docs[role])
            used.setdefault(comp, set()).update(
                (i, a) for i in allowing for a in _as_list(sts[i].get("Action", []))
                if _wild(a, req.action, case=False))
        else:
            denied.append((comp, {**call, "action": req.action, "resource": req.resource}))
    unused: dict[str, list[str]] = {}
    for comp in sorted(seen):
        for i, st in enumerate(statements(role_docs[COMPONENT_ROLES[comp]])):
            if st.get("Effect") != "Allow":
                continue
            for action in _as_list(st.get("Action", [])):
                if (i, action) not in used.get(comp, set()):
                    where = json.dumps(st.get("Resource"))
                    cond = f" if {json.dumps(st['Condition'])}" if st.get("Condition") else ""
                    unused.setdefault(comp, []).append(f"{action} on {where}{cond}")
    summary: dict[str, dict[str, int]] = {}
    for call in calls:
        ops = summary.setdefault(call["component"], {})
        key = f"{call['service']}:{call['operation']}"
        ops[key] = ops.get(key, 0) + 1
    return Verdict(denied, unused, len(calls), summary)
