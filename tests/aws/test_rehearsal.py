"""Deploy rehearsal without AWS (`make rehearse`; also in `make test`): template.yaml as CloudFormation
receives it (SAM transform offline, aws-sam-translator), checked against the code:

- cfn-lint clean;
- every environment variable a function or the listener task is given is read by the code, and the
  settings built from it (plus the secret's keys) validate for that component: nothing required is missing;
- every table / bucket / secret referenced is declared in the template (and tables' indexes exist);
- timeouts ordered: the stream Lambda's timeout is above the longest request it can be asked to wait
  for (out-time cap + image download), and the stale-channel age above both.
The handlers of the *built* artifact are imported in tests/aws/test_template_sam.py (after `sam build`).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import aws as support
from tests.support import iam

ROOT = Path(__file__).resolve().parents[2]
#: variables the code reads that are not Settings fields (cdp.entry.aws, powertools, the Web Adapter)
NON_SETTINGS = {"CDP_SECRET_ID", "CDP_SECRET_MAX_AGE", "DISCORD_PUBLIC_KEY", "CDP_HEALTH_PORT",
                "POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL",
                "AWS_LAMBDA_EXEC_WRAPPER", "AWS_LWA_INVOKE_MODE", "AWS_LWA_PORT", "AWS_LWA_READINESS_CHECK_PATH",
                "AWS_REGION"}
#: the keys of AppSecret's JSON (what the functions get from CDP_SECRET_ID)
SECRET_KEYS = {"USER_AUTHORIZATION", "BOT_TOKEN", "PROXY_SECRET", "NOTIFY_TELEGRAM_BOT_TOKEN", "PROXY_ADMIN_SECRET",
               "METRICS_TOKEN"}
#: secret settings the code reads that the secret's template leaves out (docs/aws.md: add when needed)
OPTIONAL_SECRET_KEYS = {"PROXY_URL"}


@pytest.fixture(scope="module")
def cfn():
    return iam.transform()


@pytest.fixture(scope="module")
def names():
    return iam.Names(tables={"RepliesTable": "cdp-replies", "StateTable": "cdp-state"},
                     buckets={"ImagesBucket": "cdp-images"},
                     secrets={"AppSecret": "arn:aws:secretsmanager:us-east-1:123456789012:secret:cdp-AbCdEf"},
                     functions={}, parameters={**{k: str(p.get("Default", "")) for k, p in
                                                  support.load_template()["Parameters"].items()},
                                               **iam.DEFAULT_PARAMETERS})


def functions(cfn) -> dict[str, dict]:
    return {lid: r["Properties"] for lid, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Function"}


def lambda_env(props: dict, names: iam.Names) -> dict[str, str]:
    raw = props.get("Environment", {}).get("Variables", {})
    return {k: str(v) for k, v in iam.resolve(raw, names).items()}


def listener_container(cfn, names) -> dict:
    (container,) = cfn["Resources"]["ListenerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    return iam.resolve(container, names, {"HasListener": True})


def test_cfn_lint_is_clean():
    r = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(ROOT / "template.yaml")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_every_variable_given_is_read_and_settings_validate(cfn, names, monkeypatch):
    from cdp.settings import Settings, load_settings

    fields = {f.upper() for f in Settings.model_fields} | {"CDP_TZ"}
    placeholders = {"USER_AUTHORIZATION": "u" * 24, "BOT_TOKEN": "b" * 24, "PROXY_SECRET": "sk-rehearsal"}
    components = {lid: lambda_env(p, names) for lid, p in functions(cfn).items()}
    container = listener_container(cfn, names)
    components["ListenerTask"] = {e["Name"]: str(e["Value"]) for e in container["Environment"]}
    secret_names = {s["Name"] for s in container.get("Secrets", [])}
    assert secret_names <= SECRET_KEYS
    for lid, env in components.items():
        unknown = set(env) - fields - NON_SETTINGS
        assert not unknown, f"{lid}: variables the code never reads: {sorted(unknown)}"
        for k in list(__import__("os").environ):
            if k in fields or k in NON_SETTINGS:
                monkeypatch.delenv(k, raising=False)
        given = dict(env)
        if lid == "ListenerTask":
            given.update({k: placeholders[k] for k in secret_names})
            from cdp.settings import LISTENER_REQUIRED as required
        else:
            assert env.get("CDP_SECRET_ID", "").startswith("arn:aws:secretsmanager:"), lid
            given.update(placeholders)  # what the secret holds
            from cdp.settings import DISCORD_REQUIRED as required
        for k, v in given.items():
            monkeypatch.setenv(k, v)
        s = load_settings(required=required)  # raises SettingsError on anything missing or malformed
        assert s.CDP_STORE == "dynamodb", lid
        assert s.replies_table == "cdp-replies" and s.state_table == "cdp-state", lid


def test_every_resource_referenced_is_declared(cfn):
    """Refs and GetAtts in the template name declared resources (after the SAM transform, which adds the
    function roles) or parameters, and the code's indexes exist on the tables."""
    t = support.load_template()
    declared = set(cfn["Resources"]) | set(t["Resources"]) | set(t.get("Parameters", {})) | {"AWS::Region", "AWS::AccountId",
                                                                      "AWS::Partition", "AWS::StackName",
                                                                      "AWS::URLSuffix"}
    text = (ROOT / "template.yaml").read_text()
    refs = set(re.findall(r"!Ref\s+([A-Za-z0-9:]+)", text)) | set(re.findall(r"!GetAtt\s+([A-Za-z0-9]+)\.", text))
    refs |= {m.split(".")[0] for m in re.findall(r"\$\{([A-Za-z0-9:.]+)\}", text)}
    assert refs <= declared, sorted(refs - declared)
    code = "\n".join(p.read_text() for p in (ROOT / "layers/common/cdp").rglob("*.py"))
    indexes = set(re.findall(r"IndexName\s*=\s*[\"']([^\"']+)", code))
    gsis = {g["IndexName"] for props in support.table_definitions(t).values()
            for g in props.get("GlobalSecondaryIndexes", [])}
    assert indexes <= gsis, sorted(indexes - gsis)


def stream_parameter(template: dict, variable: str) -> str:
    """The template parameter that sets `variable` on the stream function."""
    ref = template["Resources"]["StreamFunction"]["Properties"]["Environment"]["Variables"][variable]
    assert isinstance(ref, dict) and set(ref) == {"Ref"}, (variable, ref)
    return ref["Ref"]


def test_secret_template_holds_every_secret_the_code_reads():
    """AppSecret's generated JSON has a key for every secret setting (PROXY_ADMIN_SECRET, METRICS_TOKEN...),
    and nothing the code would ignore."""
    from cdp.settings import SECRET_SETTINGS

    gen = support.load_template()["Resources"]["AppSecret"]["Properties"]["GenerateSecretString"]
    keys = set(__import__("json").loads(gen["SecretStringTemplate"])) | {gen["GenerateStringKey"]}
    assert keys == SECRET_KEYS
    assert keys <= set(SECRET_SETTINGS) and set(SECRET_SETTINGS) - keys == OPTIONAL_SECRET_KEYS


def parameter_values(p: dict) -> list[str]:
    """The values a parameter admits at its edges: its default, allowed values, bounds."""
    values = [p["Default"]] if "Default" in p else []
    values += p.get("AllowedValues", [])
    values += [p[k] for k in ("MinValue", "MaxValue") if k in p]
    return [str(v) for v in values]


def test_every_parameter_value_allowed_is_a_valid_setting(cfn):
    """A parameter that sets a setting admits only values the setting accepts (its default, each allowed
    value, its bounds), so a stack that deploys does not fail at its first request; each new setting's
    default is the code's own default (the template changes no behaviour by itself)."""
    from cdp.settings import Settings

    params = support.load_template()["Parameters"]
    wired: dict[str, set[str]] = {}  # parameter -> the settings it sets
    for props in functions(cfn).values():
        for var, value in props.get("Environment", {}).get("Variables", {}).items():
            if isinstance(value, dict) and value.get("Ref") in params and var in Settings.model_fields:
                wired.setdefault(value["Ref"], set()).add(var)
    for param, variables in wired.items():
        for var in variables:
            for v in parameter_values(params[param]):
                Settings(_env_file=None, **{var: v})  # raises ValidationError on a value the code refuses
    new = {"CONVERSATION_MODE", "CONVERSATION_IDLE_TTL", "CONVERSATION_CHANNEL_BUDGET", "ACCOUNT_MAX_CONCURRENT",
           "ACCOUNT_MIN_GAP", "QUEUE_MAX_SIZE", "QUEUE_MAX_WAIT", "STRICT_MODELS", "TOOLS_EMULATION"}
    t = support.load_template()
    for var in new:
        param = params[stream_parameter(t, var)]
        code_default = Settings.model_fields[var].default
        assert Settings(_env_file=None, **{var: str(param["Default"])}).__getattribute__(var) == code_default, var


def test_timeouts_are_ordered(cfn, names, monkeypatch):
    from cdp.domain.housekeeping import STALE_IN_USE_SECONDS
    from cdp.settings import MAX_REQUEST_SECONDS, Settings

    fns = functions(cfn)
    stream = fns["StreamFunction"]
    env = lambda_env(stream, names)
    s = Settings(_env_file=None, **{k: v for k, v in env.items() if k in Settings.model_fields})
    posting_margin = 10  # posting the prompt, the final chunks
    # a request first waits for an account (at most QUEUE_MAX_WAIT, the largest value the template allows),
    # then its out-time runs from the post; then the images are downloaded
    t = support.load_template()
    wait_param = stream_parameter(t, "QUEUE_MAX_WAIT")
    queue_wait = max(float(t["Parameters"][wait_param]["MaxValue"]), s.QUEUE_MAX_WAIT)
    longest = (max(MAX_REQUEST_SECONDS, s.REQUEST_OUT_TIME, s.STREAM_REQUEST_OUT_TIME) + queue_wait
               + s.IMAGE_DOWNLOAD_TIMEOUT)
    assert longest + posting_margin < stream["Timeout"], (longest, stream["Timeout"])
    assert stream["Timeout"] < STALE_IN_USE_SECONDS  # a live request's channel is never taken for stale
    # API Gateway waits as long for the streamed routes
    for ev in t["Resources"]["StreamFunction"]["Properties"]["Events"].values():
        assert ev["Properties"]["TimeoutInMillis"] >= stream["Timeout"] * 1000
    # buffered functions: below API Gateway's 29 s integration limit is the API's business; jobs finish
    # within their schedule period
    assert fns["ApiFunction"]["Timeout"] <= 30
    assert fns["CleanupFunction"]["Timeout"] <= 60
    # keepalive: each bot's post waits for an account slot (QUEUE_MAX_WAIT, the default: the function
    # is not given the parameter), then the temporary channel's grace; room for a few bots
    from cdp.app.jobs import KEEPALIVE_CHANNEL_GRACE

    per_bot = Settings(_env_file=None).QUEUE_MAX_WAIT + posting_margin
    assert fns["KeepaliveFunction"]["Timeout"] >= 4 * per_bot + KEEPALIVE_CHANNEL_GRACE
    assert fns["InteractionsFunction"]["Timeout"] >= fns["KeepaliveFunction"]["Timeout"]  # `/cdp keepalive`


#: measured peak RSS of the stream function's process (uvicorn + app, streamed chats and an image
#: generation against moto and the fake Discord; docs/aws.md "Memory"), and the Web Adapter's share
MEASURED_STREAM_PEAK_MB = 110
WEB_ADAPTER_MB = 20


def test_stream_memory_covers_its_peak_and_image_budget(cfn, names):
    """MemorySize holds the measured peak plus the image bytes one request may hold (downloaded, then
    uploaded to S3: counted twice), with a 20% margin."""
    from cdp.settings import Settings

    stream = functions(cfn)["StreamFunction"]
    env = lambda_env(stream, names)
    s = Settings(_env_file=None, **{k: v for k, v in env.items() if k in Settings.model_fields})
    need_mb = MEASURED_STREAM_PEAK_MB + WEB_ADAPTER_MB + 2 * s.IMAGE_DOWNLOAD_TOTAL_BYTES / 2**20
    assert need_mb * 1.2 <= stream["MemorySize"], (need_mb, stream["MemorySize"])
    assert stream["Architectures"] == ["arm64"]  # 20% cheaper per GB-s than x86_64
