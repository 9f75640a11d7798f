"""Photos: the gateway signs, the phone uploads straight to (a fake) Cloudinary, the gateway
verifies the asset with the Admin API and records it — and never hands out the API secret."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.app import create_app
from gateway.settings import Settings
from tests.fake_cloudinary import FakeCloudinary, png, signature_of
from tests.helpers import Couch

PARAMS = "/api/v1/photos/upload-params"
CONFIRM = "/api/v1/photos/confirm"
SECRET = "fake-api-secret-Zx8Q"
ANSWERS: list[bytes] = []


class RecordingCouch(Couch):
    """A ``Couch`` that keeps every raw answer of the gateway (status line, headers, body)."""

    last_headers: Any = None

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        expected = kw.pop("expected_status", 200)
        async with self.client.request(
            method, path, data=orjson.dumps(body) if body is not None else None,
            headers=self.headers(kw.pop("headers", None)), **kw,
        ) as resp:  # fmt: skip
            content = await resp.read()
            ANSWERS.append(f"{resp.status} {dict(resp.headers)}".encode() + content)
            if expected is not None:
                assert resp.status == expected, (resp.status, content[:2000])
            self.last_headers = resp.headers
            return orjson.loads(content) if content else None


@pytest.fixture(autouse=True)
def _the_secret_never_leaves_the_gateway() -> Iterator[None]:
    ANSWERS.clear()
    yield
    for answer in ANSWERS:
        assert SECRET.encode() not in answer, answer


@pytest.fixture
async def fake() -> AsyncIterator[FakeCloudinary]:
    server = FakeCloudinary(api_secret=SECRET)
    await server.start()
    yield server
    await server.stop()


def configured(settings: Settings, fake: FakeCloudinary, **more: Any) -> Settings:
    return dataclasses.replace(
        settings, cloudinary_url=fake.cloudinary_url, cloudinary_api_base=fake.url,
        cloudinary_timeout_seconds=2.0, **more,
    )  # fmt: skip


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings, engine: Any, fake: FakeCloudinary) -> Any:
    """This module's gateway talks to the fake Cloudinary."""
    return await aiohttp_client(create_app(configured(settings, fake), migrate=False))


@pytest.fixture
def alice(client: Any) -> RecordingCouch:
    return RecordingCouch(client, "alice")


@pytest.fixture
def bob(client: Any) -> RecordingCouch:
    return RecordingCouch(client, "bob")


@pytest.fixture
def manager(client: Any) -> RecordingCouch:
    return RecordingCouch(client, "manager")


async def new_inspection(user: Couch) -> str:
    return (await user.post("/api/v1/inspections", {"title": "x"}, expected_status=201))["id"]


async def phone_upload(
    url: str, params: dict[str, Any], data: bytes | None = None, filename: str = "photo.png"
) -> tuple[int, dict[str, Any]]:
    """Post an image with ``params`` straight to Cloudinary, as the field app does."""
    form = aiohttp.FormData()
    for key, value in params.items():
        form.add_field(key, str(value))
    form.add_field("file", png() if data is None else data, filename=filename)
    async with aiohttp.ClientSession() as session, session.post(url, data=form) as resp:
        return resp.status, await resp.json()


async def uploaded(user: Couch, inspection_id: str) -> dict[str, Any]:
    """Get parameters from the gateway and upload a PNG with them: Cloudinary's answer."""
    signed = await user.post(PARAMS, {"inspection_id": inspection_id})
    status, asset = await phone_upload(signed["upload_url"], signed["params"])
    assert status == 200, asset
    return asset


def photos_of(inspection_id: str) -> str:
    return f"/api/v1/inspections/{inspection_id}/photos"


# --- the flow ----------------------------------------------------------------------------


async def test_params_upload_confirm_and_list(alice: Couch, fake: FakeCloudinary) -> None:
    inspection = await new_inspection(alice)
    before = int(time.time())
    signed = await alice.post(PARAMS, {"inspection_id": inspection})
    assert signed["upload_url"] == f"{fake.url}/v1_1/demo-cloud/image/upload"
    params = signed["params"]
    assert set(params) >= {"api_key", "timestamp", "signature", "folder", "public_id"}
    assert params["api_key"] == fake.api_key and "api_secret" not in params
    assert params["folder"] == f"inspections/{inspection}"
    assert params["allowed_formats"] == "jpg,png,heic,webp"
    assert params["max_file_size"] == 10 * 1024 * 1024
    assert before <= params["timestamp"] <= time.time()
    assert params["signature"] == signature_of(
        {k: str(v) for k, v in params.items()}, SECRET
    )  # Cloudinary's own rule, computed independently of the gateway's library
    expires = datetime.fromisoformat(signed["expires_at"].replace("Z", "+00:00"))
    assert int(expires.timestamp()) == params["timestamp"] + 3600

    status, asset = await phone_upload(signed["upload_url"], params)
    assert status == 200, asset
    assert asset["public_id"] == f"inspections/{inspection}/{params['public_id']}"
    assert fake.uploads == 1

    body = {"inspection_id": inspection, "public_id": asset["public_id"]}
    photo = await alice.post(CONFIRM, {**body, "version": asset["version"]}, expected_status=201)
    assert uuid.UUID(photo["id"])
    assert {k: photo[k] for k in ("public_id", "version", "format", "bytes", "secure_url")} == {
        k: asset[k] for k in ("public_id", "version", "format", "bytes", "secure_url")
    }
    assert (photo["width"], photo["height"]) == (3, 2)
    assert photo["inspection_id"] == inspection and photo["uploader"] == "alice"
    assert photo["created_at"].endswith("Z")

    again = await alice.post(CONFIRM, body, expected_status=200)
    assert again == photo
    listed = await alice.get(photos_of(inspection))
    assert listed == {"results": [photo]}


async def test_the_library_global_configuration_is_left_alone(alice: Couch) -> None:
    import cloudinary

    before = dict(vars(cloudinary.config()))
    inspection = await new_inspection(alice)
    asset = await uploaded(alice, inspection)
    body = {"inspection_id": inspection, "public_id": asset["public_id"]}
    await alice.post(CONFIRM, body, expected_status=201)
    assert dict(vars(cloudinary.config())) == before


async def test_photos_are_listed_per_inspection_in_order(alice: Couch) -> None:
    first, second = await new_inspection(alice), await new_inspection(alice)
    made = []
    for inspection in (first, first, second):
        asset = await uploaded(alice, inspection)
        made.append(
            await alice.post(
                CONFIRM, {"inspection_id": inspection, "public_id": asset["public_id"]},
                expected_status=201,
            )
        )  # fmt: skip
    assert (await alice.get(photos_of(first)))["results"] == made[:2]
    assert (await alice.get(photos_of(second)))["results"] == made[2:]


# --- the signature is real ---------------------------------------------------------------


@pytest.mark.parametrize(
    "tamper",
    [
        {"folder": "inspections/5f0c2f4e-8a7b-4c1d-9e2f-3a4b5c6d7e8f"},
        {"public_id": "chosen-by-the-phone"},
        {"timestamp": "+1"},
        {"allowed_formats": "jpg,png,heic,webp,gif"},
        {"max_file_size": "999999999"},
        {"overwrite": "true"},  # an added parameter
        {"signature": "0" * 40},
    ],
    ids=lambda t: next(iter(t)),
)
async def test_tampered_parameters_are_refused_by_cloudinary(
    alice: Couch, fake: FakeCloudinary, tamper: dict[str, str]
) -> None:
    signed = await alice.post(PARAMS, {"inspection_id": await new_inspection(alice)})
    params = dict(signed["params"])
    for key, value in tamper.items():
        params[key] = params[key] + 1 if value == "+1" else value
    status, answer = await phone_upload(signed["upload_url"], params)
    assert status == 401 and "Invalid Signature" in answer["error"]["message"], answer
    assert fake.uploads == 0
    status, _ = await phone_upload(signed["upload_url"], signed["params"])
    assert status == 200 and fake.uploads == 1


async def test_an_expired_signature_is_refused(alice: Couch, fake: FakeCloudinary) -> None:
    signed = await alice.post(PARAMS, {"inspection_id": await new_inspection(alice)})
    fake.clock_offset = 3601  # the phone comes back online an hour later
    status, answer = await phone_upload(signed["upload_url"], signed["params"])
    assert status == 400 and "Stale request" in answer["error"]["message"], answer
    assert fake.uploads == 0


async def test_a_shorter_validity_is_enforced_by_cloudinary_itself(
    aiohttp_client: Any, settings: Settings, engine: Any, fake: FakeCloudinary
) -> None:
    app = create_app(configured(settings, fake, photo_upload_ttl_seconds=300), migrate=False)
    alice = RecordingCouch(await aiohttp_client(app), "alice")
    signed = await alice.post(PARAMS, {"inspection_id": await new_inspection(alice)})
    expires = datetime.fromisoformat(signed["expires_at"].replace("Z", "+00:00")).timestamp()
    assert abs(expires - (time.time() + 300)) < 5
    fake.clock_offset = 310
    status, answer = await phone_upload(signed["upload_url"], signed["params"])
    assert status == 400 and "Stale request" in answer["error"]["message"], answer
    fake.clock_offset = 0
    status, _ = await phone_upload(signed["upload_url"], signed["params"])
    assert status == 200


async def test_sha256_signatures_when_configured(
    aiohttp_client: Any, settings: Settings, engine: Any
) -> None:
    fake = FakeCloudinary(api_secret=SECRET, algorithm="sha256")
    await fake.start()
    try:
        app = create_app(
            configured(settings, fake, cloudinary_signature_algorithm="sha256"), migrate=False
        )
        alice = RecordingCouch(await aiohttp_client(app), "alice")
        inspection = await new_inspection(alice)
        signed = await alice.post(PARAMS, {"inspection_id": inspection})
        assert len(signed["params"]["signature"]) == 64
        status, asset = await phone_upload(signed["upload_url"], signed["params"])
        assert status == 200, asset
        body = {"inspection_id": inspection, "public_id": asset["public_id"]}
        await alice.post(CONFIRM, body, expected_status=201)
    finally:
        await fake.stop()


async def test_cloudinary_refuses_other_formats_and_oversize_files(
    aiohttp_client: Any, settings: Settings, engine: Any, fake: FakeCloudinary
) -> None:
    app = create_app(configured(settings, fake, photo_max_bytes=1000), migrate=False)
    alice = RecordingCouch(await aiohttp_client(app), "alice")
    signed = await alice.post(PARAMS, {"inspection_id": await new_inspection(alice)})
    gif = b"GIF89a" + b"\x00" * 50
    status, answer = await phone_upload(signed["upload_url"], signed["params"], gif, "a.gif")
    assert status == 400 and "format gif not allowed" in answer["error"]["message"]
    status, answer = await phone_upload(signed["upload_url"], signed["params"], png() + bytes(2000))
    assert status == 400 and "File size too large" in answer["error"]["message"]
    assert fake.uploads == 0


# --- confirming --------------------------------------------------------------------------


async def test_confirming_an_image_that_does_not_exist_is_a_clear_404(
    alice: Couch, fake: FakeCloudinary
) -> None:
    inspection = await new_inspection(alice)
    body = {"inspection_id": inspection, "public_id": f"inspections/{inspection}/never"}
    err = await alice.post(CONFIRM, body, expected_status=404)
    assert err["error"] == "not_found" and "Cloudinary has no image" in err["reason"]
    assert fake.lookups == 1
    assert (await alice.get(photos_of(inspection)))["results"] == []


async def test_the_gateway_checks_folder_format_size_and_version(
    alice: Couch, fake: FakeCloudinary
) -> None:
    inspection, other = await new_inspection(alice), await new_inspection(alice)
    cases = {
        f"inspections/{other}/a": "not uploaded for this inspection",
        f"elsewhere/{inspection}/a": "not uploaded for this inspection",
        f"inspections/{inspection}/gif": "Format 'gif' is not allowed",
        f"inspections/{inspection}/big": "at most 10485760 are allowed",
    }
    fake.add_asset(f"inspections/{other}/a")
    fake.add_asset(f"elsewhere/{inspection}/a")
    fake.add_asset(f"inspections/{inspection}/gif", fmt="gif")
    fake.add_asset(f"inspections/{inspection}/big", size=10 * 1024 * 1024 + 1)
    for public_id, reason in cases.items():
        body = {"inspection_id": inspection, "public_id": public_id}
        err = await alice.post(CONFIRM, body, expected_status=400)
        assert reason in err["reason"], (public_id, err)
    good = fake.add_asset(f"inspections/{inspection}/ok")
    body = {"inspection_id": inspection, "public_id": good["public_id"]}
    err = await alice.post(CONFIRM, {**body, "version": good["version"] - 1}, expected_status=409)
    assert err["error"] == "conflict"
    assert (await alice.get(photos_of(inspection)))["results"] == []
    await alice.post(CONFIRM, {**body, "version": good["version"]}, expected_status=201)


async def test_an_image_recorded_for_one_inspection_cannot_be_confirmed_for_another(
    alice: Couch, fake: FakeCloudinary
) -> None:
    inspection, other = await new_inspection(alice), await new_inspection(alice)
    asset = await uploaded(alice, inspection)
    body = {"inspection_id": inspection, "public_id": asset["public_id"]}
    photo = await alice.post(CONFIRM, body, expected_status=201)
    err = await alice.post(CONFIRM, {**body, "inspection_id": other}, expected_status=409)
    assert err["error"] == "conflict"
    assert (await alice.get(photos_of(other)))["results"] == []
    assert (await alice.get(photos_of(inspection)))["results"] == [photo]


@pytest.mark.parametrize("outage", ["500", "502", "503", "stopped"])
async def test_a_cloudinary_outage_is_a_retryable_503_and_records_nothing(
    alice: Couch, fake: FakeCloudinary, outage: str
) -> None:
    inspection = await new_inspection(alice)
    asset = await uploaded(alice, inspection)
    body = {"inspection_id": inspection, "public_id": asset["public_id"]}
    if outage == "stopped":
        await fake.stop()
    else:
        fake.fail_status = int(outage)
    err = await alice.post(CONFIRM, body, expected_status=503)
    assert err == {"error": "service_unavailable", "reason": err["reason"]}
    assert "retry" in err["reason"]
    assert int(alice.last_headers["Retry-After"]) > 0
    assert (await alice.get(photos_of(inspection)))["results"] == []
    if outage == "stopped":
        await fake.start()
    fake.fail_status = None
    photo = await alice.post(CONFIRM, body, expected_status=201)
    assert await alice.post(CONFIRM, body, expected_status=200) == photo
    assert (await alice.get(photos_of(inspection)))["results"] == [photo]


async def test_wrong_gateway_credentials_are_a_502_without_the_secret(
    aiohttp_client: Any, settings: Settings, engine: Any, fake: FakeCloudinary
) -> None:
    wrong = dataclasses.replace(
        configured(settings, fake), cloudinary_url=f"cloudinary://{fake.api_key}:nope@demo-cloud"
    )
    alice = RecordingCouch(await aiohttp_client(create_app(wrong, migrate=False)), "alice")
    inspection = await new_inspection(alice)
    asset = fake.add_asset(f"inspections/{inspection}/a")
    body = {"inspection_id": inspection, "public_id": asset["public_id"]}
    err = await alice.post(CONFIRM, body, expected_status=502)
    assert err["error"] == "bad_gateway" and "credentials" in err["reason"]


# --- access ------------------------------------------------------------------------------


async def test_only_those_who_see_the_inspection_get_params_confirm_or_list(
    alice: Couch, bob: Couch, manager: Couch, fake: FakeCloudinary
) -> None:
    inspection = await new_inspection(alice)
    missing = str(uuid.uuid4())
    asset = await uploaded(alice, inspection)
    theirs = await bob.post(PARAMS, {"inspection_id": inspection}, expected_status=404)
    assert theirs == await bob.post(PARAMS, {"inspection_id": missing}, expected_status=404)
    body = {"inspection_id": inspection, "public_id": asset["public_id"]}
    theirs = await bob.post(CONFIRM, body, expected_status=404)
    assert theirs == await bob.post(
        CONFIRM, {**body, "inspection_id": missing}, expected_status=404
    )
    assert fake.lookups == 0  # refused before asking Cloudinary
    theirs = await bob.get(photos_of(inspection), expected_status=404)
    assert theirs == await bob.get(photos_of(missing), expected_status=404)

    photo = await alice.post(CONFIRM, body, expected_status=201)
    await bob.post(CONFIRM, body, expected_status=404)  # not even the recorded one
    await bob.get(photos_of(inspection), expected_status=404)
    assert (await manager.get(photos_of(inspection)))["results"] == [photo]
    await manager.post(PARAMS, {"inspection_id": inspection})


async def test_a_deleted_inspection_takes_no_photos(alice: Couch) -> None:
    inspection = await new_inspection(alice)
    await alice.delete(f"/api/v1/inspections/{inspection}?version=1")
    await alice.post(PARAMS, {"inspection_id": inspection}, expected_status=404)
    await alice.get(photos_of(inspection), expected_status=404)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (PARAMS, {}),
        (PARAMS, {"inspection_id": "not-a-uuid"}),
        (PARAMS, {"inspection_id": str(uuid.uuid4()), "folder": "x"}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4())}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4()), "public_id": ""}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4()), "public_id": 5}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4()), "public_id": "a\u0000b"}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4()), "public_id": "../x"}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4()), "public_id": "a", "version": True}),
        (CONFIRM, {"inspection_id": str(uuid.uuid4()), "public_id": "a", "version": "1"}),
    ],
)
async def test_bad_bodies_are_400(alice: Couch, path: str, body: dict[str, Any]) -> None:
    err = await alice.post(path, body, expected_status=400)
    assert set(err) == {"error", "reason"} and err["error"] == "bad_request"


# --- configuration -----------------------------------------------------------------------


async def test_without_cloudinary_the_photo_routes_are_503_not_configured(
    aiohttp_client: Any, settings: Settings, engine: Any
) -> None:
    assert settings.cloudinary_url is None
    alice = RecordingCouch(await aiohttp_client(create_app(settings, migrate=False)), "alice")
    inspection = await new_inspection(alice)
    err = await alice.post(PARAMS, {"inspection_id": inspection}, expected_status=503)
    assert err["error"] == "not_configured" and "CLOUDINARY_URL" in err["reason"]
    body = {"inspection_id": inspection, "public_id": f"inspections/{inspection}/a"}
    err = await alice.post(CONFIRM, body, expected_status=503)
    assert err["error"] == "not_configured"
    # what was recorded stays readable
    assert (await alice.get(photos_of(inspection)))["results"] == []


def test_the_settings_read_the_environment_and_mask_the_secret() -> None:
    from gateway.settings import load_settings

    env = {
        "CLOUDINARY_URL": f"cloudinary://key:{SECRET}@cloud",
        "GATEWAY_CLOUDINARY_API_BASE": "http://127.0.0.1:9",
        "GATEWAY_PHOTO_ALLOWED_FORMATS": "JPG, png",
        "GATEWAY_PHOTO_MAX_BYTES": "5000",
        "GATEWAY_PHOTO_UPLOAD_TTL_SECONDS": "600",
        "GATEWAY_CLOUDINARY_SIGNATURE_ALGORITHM": "sha256",
    }
    loaded = load_settings(env, dotenv_path="")
    assert loaded.photo_allowed_formats == ("jpg", "png")
    assert (loaded.photo_max_bytes, loaded.photo_upload_ttl_seconds) == (5000, 600)
    assert loaded.cloudinary_api_base == "http://127.0.0.1:9"
    shown = orjson.dumps(loaded.masked())
    assert SECRET.encode() not in shown and b"cloudinary://key:***@cloud" in shown
    for name, value in [
        ("CLOUDINARY_URL", f"https://key:{SECRET}@cloud"),
        ("GATEWAY_PHOTO_UPLOAD_TTL_SECONDS", "7200"),
        ("GATEWAY_CLOUDINARY_SIGNATURE_ALGORITHM", "md5"),
    ]:
        with pytest.raises(SystemExit) as failed:
            load_settings({**env, name: value}, dotenv_path="")
        assert SECRET not in str(failed.value)
