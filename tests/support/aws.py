"""AWS test helpers: a moto server subprocess on a free loopback port, and tables created from
template.yaml's own resource definitions (so the code and the template cannot drift).

Usable from any test package (tests/aws, tests/e2e): import as `tests.support.aws` with the repo
root on sys.path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
FUNCTIONS = ROOT / "functions"
# logical id in template.yaml -> short name used for CDP_<NAME>_TABLE / the default "<prefix>-<name>"
TABLES = {"RepliesTable": "replies", "StateTable": "state"}
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                    "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1",
                    "AWS_DEFAULT_REGION": "us-east-1"}


# -- template.yaml ---------------------------------------------------------------------------------
class CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short-form tags (!Ref, !GetAtt, !Sub, ...)."""


def _cfn_tag(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _cfn_tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=CfnLoader)


def table_definitions(template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """logical id -> Properties of every AWS::DynamoDB::Table in the template."""
    template = template or load_template()
    return {lid: res.get("Properties", {}) for lid, res in template["Resources"].items()
            if res.get("Type") == "AWS::DynamoDB::Table"}


def create_table_kwargs(props: dict[str, Any], name: str) -> dict[str, Any]:
    """CloudFormation table properties -> DynamoDB CreateTable arguments."""
    kwargs: dict[str, Any] = {"TableName": name, "AttributeDefinitions": props["AttributeDefinitions"],
                              "KeySchema": props["KeySchema"],
                              "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST")}
    if "GlobalSecondaryIndexes" in props:
        kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
    stream = props.get("StreamSpecification")
    if stream:
        kwargs["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    return kwargs


def create_tables(client, prefix: str, template: dict[str, Any] | None = None) -> dict[str, str]:
    """Create every table of the template as `<prefix>-<short name>`; returns short name -> table name."""
    names: dict[str, str] = {}
    for lid, props in table_definitions(template).items():
        short = TABLES.get(lid, lid.removesuffix("Table").lower())
        name = f"{prefix}-{short}"
        client.create_table(**create_table_kwargs(props, name))
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            client.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"], "Enabled": True})
        names[short] = name
    return names


# -- moto server -----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MotoServer:
    port: int
    process: subprocess.Popen
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, service: str = "dynamodb"):
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="testing",
            aws_secret_access_key="testing", aws_session_token="testing")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_moto_server(attempts: int = 5, ready_timeout: float = 20.0) -> MotoServer:
    """Start moto's server (serialised: tests/support/moto_serial.py) on a free loopback port and wait
    until it answers."""
    last_error = ""
    for _ in range(attempts):
        port = free_port()
        # Its access log goes to a file: an unread pipe fills after ~1000 requests (64 KiB) and then
        # moto blocks on that write and stops answering.
        log = tempfile.TemporaryFile()
        # one request at a time, so conditional writes are atomic as in DynamoDB (moto_serial.py)
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("moto_serial.py")),
                                 "-H", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=log,
                                env={**os.environ, **FAKE_CREDENTIALS})
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log.seek(0)
                last_error = log.read().decode(errors="replace")[-2000:]
                break  # port taken between free_port() and bind: try another one
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=1):
                    pass
                return MotoServer(port, proc)
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        else:
            proc.kill()
            last_error = "moto server did not answer in time"
    raise RuntimeError(f"could not start a moto server: {last_error}")


@contextlib.contextmanager
def moto_server() -> Iterator[MotoServer]:
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


def unique_prefix(label: str = "t") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"


def aws_env(server: MotoServer, prefix: str) -> dict[str, str]:
    """Environment that points cdp (boto3, DynamoSettings) at the moto server and prefixed tables."""
    return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": server.url, "CDP_TABLE_PREFIX": prefix,
            "CDP_STORE": "dynamodb", "CDP_REPLIES_TABLE": f"{prefix}-replies",
            "CDP_STATE_TABLE": f"{prefix}-state"}


def store_settings(server: MotoServer, tables: tuple[str, Any], **kw: Any):
    """Settings of the DynamoDB store adapters on the moto server and a module's tables (the `tables`
    fixture's (prefix, names)); the credentials are the tests/aws conftest's fake ones."""
    from cdp.settings import Settings

    return Settings(CDP_TABLE_PREFIX=tables[0], AWS_ENDPOINT_URL=server.url, AWS_REGION="us-east-1", **kw)


def create_secret(server: MotoServer, name: str, values: dict[str, str]) -> str:
    import json

    resp = server.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(values))
    return resp["ARN"]


# -- Lambda helpers --------------------------------------------------------------------------------
@dataclass
class LambdaContext:
    function_name: str = "cdp-test"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:cdp-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/cdp-test"
    log_stream_name: str = "2025/01/01/[$LATEST]0123456789abcdef"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def load_event(name: str) -> dict[str, Any]:
    import json

    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def load_handler_module(function: str, unique: str | None = None):
    """Import functions/<function>/app.py as a fresh module (each function has its own app.py)."""
    import importlib.util

    path = FUNCTIONS / function / "app.py"
    name = f"cdp_fn_{function}_{unique or uuid.uuid4().hex[:6]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# -- the listener as a process (`cdp listener`) ----------------------------------------------------
def discord_env(fake, **over: str) -> dict[str, str]:
    """Settings that point cdp at a running cdp.sim.FakeDiscord."""
    cfg = fake.config
    env = {"BOT_TOKEN": cfg.bot_token, "GUILD_ID": cfg.guild_id, "COZE_BOT_ID": cfg.coze_bot_ids[0],
           "USER_AUTHORIZATION": ",".join(cfg.user_tokens), "DISCORD_API_BASE": fake.base_url}
    env.update(over)
    return env


def start_listener_process(env: dict[str, str], cwd: Path | str, health_port: int) -> subprocess.Popen:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("CDP_", "AWS_"))}
    return subprocess.Popen([sys.executable, "-m", "cdp.entry.cli", "listener", "--health-port", str(health_port)],
                            env={**base, **env}, cwd=str(cwd), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def healthz(port: int) -> tuple[int, dict]:
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def wait_until(pred, timeout: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(every)
    raise AssertionError("condition not met in time")
