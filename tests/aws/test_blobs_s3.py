"""S3BlobStore (cdp.adapters.blobs) against a moto server over HTTP, and `cdp serve` re-hosting generated images
in S3 (BLOB_BUCKET) end to end: the returned /files/<name> URL keeps serving the PNG after the
temporary channel (and Discord's attachment) is gone."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import pytest
from cdp.adapters.blobs import BLOB_NAME, BlobStoreError, LocalBlobStore, S3BlobStore, make_blob_store
from cdp.settings import Settings, SettingsError

from tests.support import aws as support

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64
JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 32


def new_bucket(moto) -> str:
    name = f"cdp-blobs-{uuid.uuid4().hex[:12]}"
    moto.client("s3").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def bucket(moto):
    return new_bucket(moto)


@pytest.fixture
def store(moto, bucket, monkeypatch):
    # As on Lambda: the endpoint comes from boto3's own AWS_ENDPOINT_URL, the client is built lazily.
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    return S3BlobStore(bucket)


async def test_put_get_round_trip(store, moto, bucket):
    assert store._client is None  # nothing built before the first call
    url = await store.put(PNG, "image/png; charset=binary")
    name = url.removeprefix("/files/")
    assert url.startswith("/files/") and BLOB_NAME.match(name) and name.endswith(".png")
    assert await store.get(name) == (PNG, "image/png")
    head = moto.client("s3").head_object(Bucket=bucket, Key=name)
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(PNG)
    # Unguessable, distinct names; the extension follows the content type.
    url2 = await store.put(JPEG, "image/jpeg")
    assert url2 != url and url2.endswith(".jpg")
    assert await store.get(url2.removeprefix("/files/")) == (JPEG, "image/jpeg")


async def test_only_images_are_stored(store):
    with pytest.raises(ValueError):
        await store.put(b"<html>", "text/html")


@pytest.mark.parametrize("name", [
    "../" + "a" * 32 + ".png", "A" * 32 + ".png", "a" * 31 + ".png", "a" * 32 + ".html", "a" * 32,
    "a" * 32 + ".png/../x", "", ".png", "a" * 32 + ".PNG",
])
async def test_bad_names_are_refused_without_asking_s3(name, bucket):
    class Boom:
        def get_object(self, **kw):
            raise AssertionError("S3 must not be asked for a name we never make")

    assert await S3BlobStore(bucket, client=Boom()).get(name) is None


async def test_a_stored_object_under_a_bad_name_is_not_served(store, moto, bucket):
    moto.client("s3").put_object(Bucket=bucket, Key="index.html", Body=b"<script>", ContentType="text/html")
    assert await store.get("index.html") is None


async def test_missing_object_is_none(store):
    assert await store.get("0" * 32 + ".png") is None


async def test_unreachable_store_is_a_clear_error(bucket, monkeypatch):
    from tests.support.proc import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    store = S3BlobStore(bucket)
    with pytest.raises(BlobStoreError) as info:
        await store.put(PNG, "image/png")
    assert "testing" not in str(info.value)  # no credential in the message
    with pytest.raises(BlobStoreError):
        await store.get("0" * 32 + ".png")


def test_selection_by_blob_bucket(tmp_path):
    assert isinstance(make_blob_store(Settings(FILES_DIR=str(tmp_path))), LocalBlobStore)
    store = make_blob_store(Settings(BLOB_BUCKET=" my-images-1 "))
    assert isinstance(store, S3BlobStore) and store.bucket == "my-images-1"
    for bad in ["My_Bucket", "ab", "a..b", "-abc", "192.168.1.1", "x" * 64]:
        with pytest.raises(SettingsError, match="BLOB_BUCKET"):
            make_blob_store(Settings(BLOB_BUCKET=bad))


def test_api_function_returns_the_image_base64_for_api_gateway(store, bucket, monkeypatch):
    """GET /files/<name> through Mangum (ApiFunction): a base64 body API Gateway decodes (BinaryMediaTypes)."""
    import base64

    from cdp.entry.aws import runtime
    from mangum import Mangum

    name = asyncio.run(store.put(PNG, "image/png")).removeprefix("/files/")
    monkeypatch.setenv("BLOB_BUCKET", bucket)
    runtime.reset()
    try:
        app = runtime.build_app(Settings(PROXY_SECRET="sk-any", _env_file=None))  # /files needs no key
        runtime.event_loop()
        handler = Mangum(app, lifespan="off")
        event = support.load_event("api_models.json")
        event["path"] = event["requestContext"]["path"] = f"/files/{name}"
        event["pathParameters"] = {"proxy": f"files/{name}"}
        resp = handler(event, support.LambdaContext(function_name="api"))
        assert resp["statusCode"] == 200 and resp["isBase64Encoded"] is True
        assert base64.b64decode(resp["body"]) == PNG
        headers = {k.lower(): v for k, v in resp["headers"].items()}
        assert headers["content-type"] == "image/png" and headers["x-content-type-options"] == "nosniff"
        event["path"] = event["requestContext"]["path"] = "/files/" + "0" * 32 + ".png"
        resp = handler(event, support.LambdaContext(function_name="api"))
        assert resp["statusCode"] == 404 and json.loads(resp["body"])["error"]["code"] == "file_not_found"
    finally:
        runtime.reset()


def test_template_bucket_is_private_expiring_and_least_privilege():
    t = support.load_template()
    res = t["Resources"]
    props = res["ImagesBucket"]["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values()) and len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    rule = props["LifecycleConfiguration"]["Rules"][0]
    assert rule["Status"] == "Enabled" and rule["ExpirationInDays"] == {"Ref": "ImageRetentionDays"}
    assert t["Parameters"]["ImageRetentionDays"]["Default"] == 30
    assert res["RestApi"]["Properties"]["BinaryMediaTypes"] == ["*~1*"]
    s3_actions = {}
    for lid, r in res.items():
        if r.get("Type") != "AWS::Serverless::Function":
            continue
        for pol in r["Properties"].get("Policies", []):
            for st in pol.get("Statement", []) if isinstance(pol, dict) else []:
                if str(st.get("Action", "")).startswith("s3:"):
                    assert st["Resource"] == {"Fn::Sub": "${ImagesBucket.Arn}/*"}
                    s3_actions.setdefault(lid, set()).add(st["Action"])
        env = r["Properties"].get("Environment", {}).get("Variables", {})
        assert ("BLOB_BUCKET" in env) == (lid in ("ApiFunction", "StreamFunction")), lid
    assert s3_actions == {"ApiFunction": {"s3:GetObject"}, "StreamFunction": {"s3:PutObject"}}


# -- end to end: `cdp serve` with BLOB_BUCKET -------------------------------------------------------
@pytest.fixture(scope="module")
def s3_stack(moto, fake):
    from tests.support.stack import start_stack

    bucket = new_bucket(moto)
    stack = start_stack("memory", fake, BLOB_BUCKET=bucket, AWS_ENDPOINT_URL=moto.url,
                        **support.FAKE_CREDENTIALS)
    try:
        yield stack, bucket
    finally:
        stack.stop()


async def test_generated_image_is_served_from_s3_after_the_channel_is_gone(s3_stack, moto):
    from tests.e2e.test_images import PNG_MAGIC, channel_of, marker, wait_deleted

    stack, bucket = s3_stack
    m = marker()
    async with stack.client() as client:
        resp = await client.images.generate(prompt=f"a red fox {m} [[sim:image_attachment]]")
    url = resp.data[0].url
    assert url.startswith(stack.url + "/files/")
    name = url.rsplit("/", 1)[1]
    # The object is in the bucket (not in a local folder), with its content type.
    assert moto.client("s3").head_object(Bucket=bucket, Key=name)["ContentType"] == "image/png"
    await wait_deleted(stack.fake, channel_of(stack.fake, m))
    async with httpx.AsyncClient() as http:
        r = await http.get(url)
        assert r.status_code == 200, r.text
        assert r.content.startswith(PNG_MAGIC) and r.headers["content-type"] == "image/png"
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert "immutable" in r.headers["cache-control"]
        # Missing and malformed names: OpenAI-shaped 404s.
        for bad in ["0" * 32 + ".png", "index.html", name.upper()]:
            r = await http.get(f"{stack.url}/files/{bad}")
            assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_found"
