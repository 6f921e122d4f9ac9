"""sequencer-cli keygen / sign / verify / demo, run as a real child process."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import stateset_sequencer
from stateset_sequencer.testing import kit
from stateset_sequencer.testing.serverproc import fake_sequencer
from stateset_sequencer.ves import envelope, signing

UNSIGNED_DROP = {"payload_plain_hash", "payload_cipher_hash", "agent_signature"}


def cli(
    *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stateset_sequencer", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )


def write_unsigned(path: Path, golden: dict[str, Any], index: int = 0, **change: Any) -> Path:
    ev = golden["golden_example"]["events"][index]
    obj = {k: v for k, v in ev.items() if not k.startswith("_") and k not in UNSIGNED_DROP} | change
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_keygen_writes_a_private_key_and_its_public_half(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    result = cli("keygen", "--out", str(out))
    assert result.returncode == 0, result.stderr
    key_text = (out / "agent.key").read_text().strip()
    pub_text = (out / "agent.pub").read_text().strip()
    assert len(key_text) == 64 and len(pub_text) == 64
    assert stat.S_IMODE((out / "agent.key").stat().st_mode) == 0o600
    assert signing.Signer(key_text).public_key.hex() == pub_text == result.stdout.strip()


def test_keygen_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    assert cli("keygen", "--out", str(tmp_path)).returncode == 0
    first = (tmp_path / "agent.key").read_text()
    again = cli("keygen", "--out", str(tmp_path))
    assert again.returncode == 1
    assert "already exists" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "agent.key").read_text() == first
    forced = cli("keygen", "--out", str(tmp_path), "--force")
    assert forced.returncode == 0
    assert (tmp_path / "agent.key").read_text() != first
    assert stat.S_IMODE((tmp_path / "agent.key").stat().st_mode) == 0o600


def test_keygen_into_an_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = cli("keygen", "--out", str(blocker / "sub"))
    assert result.returncode == 1 and "cannot write" in result.stderr


def test_sign_reproduces_the_golden_envelopes(tmp_path: Path, golden: dict[str, Any]) -> None:
    key = tmp_path / "agent.key"
    key.write_text(golden["golden_example"]["signing_key_seed"] + "\n")
    key.chmod(0o600)
    for i, ev in enumerate(golden["golden_example"]["events"]):
        result = cli(
            "sign",
            "--key",
            str(key),
            "--event",
            str(write_unsigned(tmp_path / f"e{i}.json", golden, i)),
        )
        assert result.returncode == 0, result.stderr
        signed = json.loads(result.stdout)
        assert signed["payload_plain_hash"] == ev["payload_plain_hash"]
        assert signed["payload_cipher_hash"] == ev["payload_cipher_hash"]
        assert signed["agent_signature"] == ev["agent_signature"]
        assert result.stdout.count("\n") == 1  # one JSON object on one line


def test_sign_from_stdin_then_verify(tmp_path: Path, golden: dict[str, Any]) -> None:
    assert cli("keygen", "--out", str(tmp_path)).returncode == 0
    unsigned = write_unsigned(tmp_path / "e.json", golden).read_text()
    signed = cli("sign", "--key", str(tmp_path / "agent.key"), "--event", "-", stdin=unsigned)
    assert signed.returncode == 0, signed.stderr
    (tmp_path / "signed.json").write_text(signed.stdout)
    ok = cli(
        "verify",
        "--event",
        str(tmp_path / "signed.json"),
        "--public-key",
        str(tmp_path / "agent.pub"),
    )
    assert ok.returncode == 0 and ok.stdout.startswith("ok:"), ok.stderr
    tampered = json.loads(signed.stdout)
    tampered["payload"]["delta"] = 7
    (tmp_path / "bad.json").write_text(json.dumps(tampered))
    bad = cli(
        "verify", "--event", str(tmp_path / "bad.json"), "--public-key", str(tmp_path / "agent.pub")
    )
    assert bad.returncode == 1 and "invalid_payload_hash" in bad.stderr


def test_sign_encrypted_event(
    tmp_path: Path, golden: dict[str, Any], enc_vectors: dict[str, Any]
) -> None:
    recipient = enc_vectors["hpke_key_pairs"]["test_keys"][0]
    key = tmp_path / "agent.key"
    key.write_text(golden["golden_example"]["signing_key_seed"])
    key.chmod(0o600)
    event = write_unsigned(
        tmp_path / "e.json",
        golden,
        payload_kind=1,
        recipients=[{"recipient_kid": 1, "public_key": recipient["public_key_hex"]}],
    )
    result = cli("sign", "--key", str(key), "--event", str(event))
    assert result.returncode == 0, result.stderr
    signed = envelope.parse_envelope(json.loads(result.stdout))
    assert signed.payload_kind == 1 and signed.payload is None
    digest = envelope.validate(signed)
    envelope.verify_signature(
        signed, signing.Signer(golden["golden_example"]["signing_key_seed"]).public_key, digest
    )


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected one JSON object"),
        ('{"payload": NaN}', "NaN"),
    ],
)
def test_sign_refuses_malformed_event_files(tmp_path: Path, content: str, needle: str) -> None:
    assert cli("keygen", "--out", str(tmp_path)).returncode == 0
    (tmp_path / "e.json").write_text(content)
    result = cli("sign", "--key", str(tmp_path / "agent.key"), "--event", str(tmp_path / "e.json"))
    assert result.returncode == 2
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"entity_type": "x" * 129}, "schema_validation: entity_type"),
        ({"created_at": "tomorrow"}, "schema_validation: created_at"),
        ({"agent_signature": "0x00"}, "must not carry agent_signature"),
        ({"agent_key_id": False}, "agent_key_id"),
        ({"payload_kind": 1}, "recipients"),
    ],
)
def test_sign_refuses_bad_fields(
    tmp_path: Path, golden: dict[str, Any], change: dict[str, Any], needle: str
) -> None:
    assert cli("keygen", "--out", str(tmp_path)).returncode == 0
    event = write_unsigned(tmp_path / "e.json", golden, **change)
    result = cli("sign", "--key", str(tmp_path / "agent.key"), "--event", str(event))
    assert result.returncode == 1
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_sign_with_a_bad_or_missing_key(tmp_path: Path, golden: dict[str, Any]) -> None:
    event = write_unsigned(tmp_path / "e.json", golden)
    missing = cli("sign", "--key", str(tmp_path / "nope.key"), "--event", str(event))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    (tmp_path / "bad.key").write_text("not a key")
    bad = cli("sign", "--key", str(tmp_path / "bad.key"), "--event", str(event))
    assert bad.returncode == 1 and "not an Ed25519 seed" in bad.stderr


def test_sign_warns_about_a_world_readable_key(tmp_path: Path, golden: dict[str, Any]) -> None:
    key = tmp_path / "agent.key"
    key.write_text(golden["golden_example"]["signing_key_seed"])
    os.chmod(key, 0o644)
    result = cli(
        "sign", "--key", str(key), "--event", str(write_unsigned(tmp_path / "e.json", golden))
    )
    assert result.returncode == 0 and "readable by other users" in result.stderr


def test_verify_refuses_bad_inputs(tmp_path: Path, golden: dict[str, Any]) -> None:
    wire = {k: v for k, v in golden["golden_example"]["events"][0].items() if not k.startswith("_")}
    (tmp_path / "e.json").write_text(json.dumps(wire))
    good_pk = golden["golden_example"]["public_key"]
    assert (
        cli("verify", "--event", str(tmp_path / "e.json"), "--public-key", good_pk).returncode == 0
    )
    small_order = "01" + "00" * 31
    r = cli("verify", "--event", str(tmp_path / "e.json"), "--public-key", small_order)
    assert r.returncode == 2 and "public key" in r.stderr
    other = signing.Signer(bytes(32)).public_key.hex()
    r = cli("verify", "--event", str(tmp_path / "e.json"), "--public-key", other)
    assert r.returncode == 1 and "invalid_signature" in r.stderr
    (tmp_path / "x.json").write_text(json.dumps(wire | {"ves_version": "1"}))
    r = cli("verify", "--event", str(tmp_path / "x.json"), "--public-key", good_pk)
    assert r.returncode == 1 and "not a VES envelope" in r.stderr


def test_demo_makes_a_key_once_and_signs(tmp_path: Path) -> None:
    first = cli("demo", "--data-dir", str(tmp_path))
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "agent" / "agent.key").read_text()
    second = cli("demo", "--data-dir", str(tmp_path))
    assert second.returncode == 0
    assert (tmp_path / "agent" / "agent.key").read_text() == key
    env = envelope.parse_envelope(json.loads(second.stdout))
    envelope.verify_signature(env, signing.Signer(key.strip()).public_key, envelope.validate(env))


def test_unknown_command_is_a_usage_error() -> None:
    result = cli("frobnicate")
    assert result.returncode == 2


def test_migrate_status_and_rollback_on_sqlite(tmp_path: Path) -> None:
    folder = Path(stateset_sequencer.__file__).parent / "store" / "migrations" / "sqlite"
    versions = sorted({p.name[:3] for p in folder.glob("*.up.sql")})
    assert versions[:4] == ["001", "002", "003", "004"]
    url = f"sqlite:///{tmp_path / 'm.db'}"
    up = cli("migrate", "--database-url", url)
    assert up.returncode == 0, up.stderr
    assert f"applied migrations {', '.join(versions)}" in up.stdout
    again = cli("migrate", "--database-url", url)
    assert again.returncode == 0 and "up to date" in again.stdout
    status = cli("migrate", "status", "--database-url", url)
    assert status.returncode == 0 and status.stdout.count("applied") == len(versions)
    down = cli("migrate", "rollback", "--to", "1", "--database-url", url)
    assert down.returncode == 0
    assert f"rolled back {', '.join(reversed(versions[1:]))}" in down.stdout
    status = cli("migrate", "status", "--database-url", url)
    assert status.stdout.count("pending") == len(versions) - 1


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("migrate", "--database-url", "mysql://x/y"), 1, "must start with"),
        (("migrate", "rollback", "--to", "-1", "--database-url", "sqlite:///x.db"), 2, "-1"),
        (("migrate", "rollback", "--database-url", "sqlite:///x.db"), 2, "--to"),
    ],
)
def test_migrate_bad_input(tmp_path: Path, args: tuple[str, ...], code: int, needle: str) -> None:
    result = cli(*args, cwd=tmp_path)
    assert result.returncode == code
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_api_keys_create_list_revoke_on_the_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert cli("migrate", "--database-url", url).returncode == 0
    tenant = "00000000-0000-0000-0000-0000000000a1"

    made = cli(
        "api-keys", "create", "--tenant-id", tenant, "--write", "--out", str(tmp_path / "k"),
        "--database-url", url,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    key = (tmp_path / "k").read_text().strip()
    assert key.startswith("ss_00000000") and len(key) == 43 and made.stdout == ""
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600

    listed = cli("api-keys", "list", "--json", "--database-url", url)
    (row,) = json.loads(listed.stdout)["keys"]
    assert row["tenantId"] == tenant and row["permissions"] == "read_write" and row["active"]
    assert key not in listed.stdout  # only a hash prefix is ever shown
    prefix = hashlib.sha256(key.encode()).hexdigest()[:12]
    assert row["keyHashPrefix"].startswith(prefix)

    revoked = cli("api-keys", "revoke", prefix, "--database-url", url)
    assert revoked.returncode == 0 and prefix in revoked.stdout
    again = cli("api-keys", "revoke", prefix, "--database-url", url)
    assert again.returncode == 2 and "ALREADY_REVOKED" in again.stderr
    listed = cli("api-keys", "list", "--json", "--database-url", url)
    assert json.loads(listed.stdout)["keys"][0]["active"] is False


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("api-keys", "create"), 2, "--tenant-id is required"),
        (("api-keys", "create", "--tenant-id", "nope"), 2, "not a UUID"),
        (("api-keys", "revoke", "abc"), 2, "INVALID_KEY_PREFIX"),
        (("api-keys", "revoke", "0123456789abcdef"), 1, "KEY_NOT_FOUND"),
        (("api-keys", "create", "--admin", "--rate-limit", "0"), 2, "rate-limit"),
    ],
)
def test_api_keys_bad_input(tmp_path: Path, args: tuple[str, ...], code: int, needle: str) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert cli("migrate", "--database-url", url).returncode == 0
    result = cli(*args, "--database-url", url)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    listed = cli("api-keys", "list", "--json", "--database-url", url)
    assert json.loads(listed.stdout)["count"] == 0


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("register-key", "--tenant-id", "x", "--agent-id", str(uuid.uuid4()),
          "--public-key", "00" * 32), 2, "badly formed"),
        (("register-key", "--tenant-id", str(uuid.uuid4()), "--agent-id", str(uuid.uuid4()),
          "--public-key", "abcd"), 2, "32"),
        (("send", "--event", "missing.json"), 2, "missing.json"),
        (("send", "--event", "garbage.json"), 2, "neither JSON nor NDJSON"),
        (("send", "--event", "array.json"), 2, "item 0 is not a VES envelope"),
        (("send", "--event", "empty.json"), 2, "no events"),
    ],
)  # fmt: skip
def test_agent_commands_refuse_bad_input(
    tmp_path: Path, args: tuple[str, ...], code: int, needle: str
) -> None:
    (tmp_path / "garbage.json").write_text("{not json\n")
    (tmp_path / "array.json").write_text('[{"ves_version": false}]')
    (tmp_path / "empty.json").write_text("[]")
    result = cli(*args, "--url", "http://127.0.0.1:9", cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_send_to_an_unreachable_sequencer_fails_in_one_line(
    tmp_path: Path, golden: dict[str, Any]
) -> None:
    key = tmp_path / "agent"
    assert cli("keygen", "--out", str(key)).returncode == 0
    signed = cli("sign", "--key", str(key / "agent.key"), "--event",
                 str(write_unsigned(tmp_path / "u.json", golden)))  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    (tmp_path / "signed.json").write_text(signed.stdout)
    # Port 9 (discard) on loopback: nothing listens there in the test environment.
    result = cli("send", "--event", str(tmp_path / "signed.json"), "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "cannot reach http://127.0.0.1:9" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("receipts", "allow", "ok", "needle"),
    [
        ("signed", False, True, "accepted 2"),
        ("unsigned", False, False, "unsigned (alg 'none')"),
        ("unsigned", True, True, "accepted 2"),
        ("wrongly-signed", False, False, "signature does not verify"),
        ("wrongly-signed", True, False, "signature does not verify"),
    ],
)
def test_send_fails_on_an_unsigned_or_wrongly_signed_receipt(
    tmp_path: Path, receipts: str, allow: bool, ok: bool, needle: str
) -> None:
    """The real service never issues such receipts; a stand-in server does, as an older
    or a compromised one might. Only an unsigned one is ever accepted, and only when
    asked."""
    issuer: signing.ReceiptSigner = {
        "signed": signing.ReceiptSigner(uuid.UUID(int=7), kit.SEQUENCER_SEED),
        "unsigned": kit.LegacyUnsignedReceipts(),
        "wrongly-signed": kit.WronglySignedReceipts(),
    }[receipts]
    events = tmp_path / "signed.ndjson"
    events.write_text("".join(json.dumps(kit.event(i).to_wire()) + "\n" for i in range(2)))
    with fake_sequencer(issuer, publish_key=receipts != "unsigned") as url:
        flag = ("--allow-unsigned-receipts",) if allow else ()
        result = cli("send", "--event", str(events), "--url", url, *flag)
    assert (result.returncode == 0) is ok, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    if not ok:
        assert result.stdout == ""  # no receipt printed as if it were good
        if receipts == "unsigned":
            assert "--allow-unsigned-receipts" in result.stderr


def test_api_keys_out_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert cli("migrate", "--database-url", url).returncode == 0
    out = tmp_path / "admin.key"
    made = cli("api-keys", "create", "--admin", "--out", str(out), "--database-url", url)
    assert made.returncode == 0, made.stderr
    # Only printed keys are "shown only this once"; a file says where the key went.
    assert "shown only this once" not in made.stderr and str(out) in made.stderr
    first = out.read_text().strip()

    again = cli("api-keys", "create", "--admin", "--out", str(out), "--database-url", url)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert "--force" in again.stderr and "Traceback" not in again.stderr
    assert out.read_text().strip() == first
    listed = cli("api-keys", "list", "--json", "--database-url", url)
    assert json.loads(listed.stdout)["count"] == 1  # nothing was minted

    forced = cli(
        "api-keys", "create", "--admin", "--out", str(out), "--force", "--database-url", url
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    old_prefix = hashlib.sha256(first.encode()).hexdigest()[:16]
    assert "still active" in forced.stderr and old_prefix in forced.stderr
    assert out.read_text().strip() != first
    rows = json.loads(cli("api-keys", "list", "--json", "--database-url", url).stdout)["keys"]
    assert [r["active"] for r in rows] == [True, True]

    printed = cli("api-keys", "create", "--admin", "--database-url", url)
    assert printed.returncode == 0 and printed.stdout.startswith("ss_")
    assert "shown only this once" in printed.stderr


def test_api_keys_list_has_a_header_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert cli("migrate", "--database-url", url).returncode == 0
    empty = cli("api-keys", "list", "--database-url", url)
    assert empty.returncode == 0
    assert empty.stdout.split()[:4] == ["KEY", "HASH", "PREFIX", "STATE"]
    assert cli("api-keys", "create", "--admin", "--database-url", url).returncode == 0
    header, row = cli("api-keys", "list", "--database-url", url).stdout.splitlines()
    assert "PARENT" in header and "TENANT" in header and "STORES" in header
    assert row.split()[1:3] == ["active", "admin"]


def test_api_keys_revoke_on_the_database_may_revoke_the_last_admin(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    assert cli("migrate", "--database-url", url).returncode == 0
    out = tmp_path / "admin.key"
    assert (
        cli("api-keys", "create", "--admin", "--out", str(out), "--database-url", url).returncode
        == 0
    )
    prefix = hashlib.sha256(out.read_text().strip().encode()).hexdigest()[:16]
    revoked = cli("api-keys", "revoke", prefix, "--database-url", url)
    assert revoked.returncode == 0, revoked.stderr
    rows = json.loads(cli("api-keys", "list", "--json", "--database-url", url).stdout)["keys"]
    assert [r["active"] for r in rows] == [False]
