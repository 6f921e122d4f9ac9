"""An agent's local Ed25519 signing keys: several key ids per agent, with rotation state,
and a passphrase-sealed archive to move or back them up.

Layout
------
``HOME/keys/<agent_id>/<key_id>.key``
    The 32-byte seed as 64 lowercase hex digits and a newline (the form ``keygen``
    writes to ``agent.key``).
``HOME/keys/<agent_id>/keys.json``
    The agent's keys: ``{"format": "stateset-agent-keys", "version": 1, "agent_id": …,
    "keys": [{"key_id", "public_key" (hex), "status", "created_at", "revoke_after",
    "revoked_at"}, …]}``, times in RFC 3339. Written whole to a temporary file, fsynced,
    renamed over the old one, then the directory fsynced: a reader sees the old list or the
    new one, never half of either.

``HOME`` is the argument, else ``$SEQUENCER_HOME``, else ``~/.sequencer``
(:func:`default_home`).

Permissions
-----------
Directories are created 0700 and files 0600, each file created with
``O_CREAT | O_EXCL`` at 0600 and ``fchmod``-ed before a byte is written, so no file is
ever wider. As ssh does with ``~/.ssh``, the store *refuses* (``INSECURE_PERMISSIONS``)
to use a key directory or file that group or others may access, or that another user
owns, and says which ``chmod`` fixes it: a key someone else could have read is not
silently trusted, and one someone else could have written (or a ``keys.json`` that
marks a revoked key active again) is not used. Key files are never followed through
symbolic links.

Statuses
--------
``active``
    May sign. :meth:`KeyStore.current` is the active key with the highest key id.
``retiring``
    Being rotated out: ``current`` no longer returns it, so nothing new is signed with it,
    but :meth:`KeyStore.signer` still loads it (events signed before the rotation may still
    be waiting in an outbox) until ``revoke_after``, when
    :meth:`KeyStore.due_for_revocation` names it.
``revoked``
    Final. The seed file is deleted when a key is revoked: verifying what it signed needs
    only the public key, which ``keys.json`` keeps, and a seed that no longer exists can
    neither sign again nor leak. :meth:`KeyStore.signer` raises ``REVOKED``. An import
    never makes a revoked key active again.

Encrypted archive (format version 1)
------------------------------------
One file, all integers unsigned::

    offset  size  field
    0       19    format name, the ASCII bytes "stateset-agent-keys"
    19      1     format version = 1
    20      1     KDF = 1 (scrypt)
    21      1     log2(N) of scrypt (15..20; this version writes 17)
    22      1     scrypt r (1..32; writes 8)
    23      1     scrypt p (1..16; writes 1)
    24      16    scrypt salt, random
    40      12    AES-GCM nonce, random
    52      ...   AES-256-GCM ciphertext of the plaintext, then its 16-byte tag

The AES key is ``scrypt(password=UTF-8 of the NFC-normalized passphrase, salt, N, r, p,
dklen=32)``; the associated data is the 52-byte header (bytes 0..51), so altering the
name, version, KDF parameters, salt or nonce fails the tag as surely as altering the
ciphertext does. Reading refuses parameters needing more than 256 MiB
(``128 * r * N``) or more work than ``N * r * p = 2**23``: the header is not authenticated
until the key it describes has been derived, so a hostile one must not be able to
exhaust memory or time first. The plaintext is UTF-8 JSON::

    {"format": "stateset-agent-keys-archive", "version": 1, "exported_at": "<RFC 3339>",
     "agents": [{"agent_id": "<uuid>", "keys": [{<a keys.json entry>, "seed": "<64 hex>"
     or null for a revoked key}]}]}

For instance, with Python's ``cryptography``: ``key = Scrypt(salt=d[24:40], length=32,
n=2**d[21], r=d[22], p=d[23]).derive(passphrase.encode())`` then
``AESGCM(key).decrypt(d[40:52], d[52:], d[:52])``.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import json
import os
import secrets
import stat
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..ves.codec import U32_MAX, format_rfc3339, parse_rfc3339
from ..ves.errors import VesError
from ..ves.signing import Signer, parse_public_key, parse_seed
from .config import default_home

KEYS_DIR = "keys"
METADATA_FILE = "keys.json"
METADATA_FORMAT = "stateset-agent-keys"
METADATA_VERSION = 1
ARCHIVE_CONTENTS = "stateset-agent-keys-archive"

ACTIVE = "active"
RETIRING = "retiring"
REVOKED = "revoked"
STATUSES = (ACTIVE, RETIRING, REVOKED)
# An import may move a key along this order, never back: an old backup must not bring a
# revoked key back to life.
_STATUS_RANK = {ACTIVE: 0, RETIRING: 1, REVOKED: 2}

ARCHIVE_MAGIC = b"stateset-agent-keys"
ARCHIVE_VERSION = 1
KDF_SCRYPT = 1
HEADER_SIZE = len(ARCHIVE_MAGIC) + 5 + 16 + 12
TAG_SIZE = 16
DEFAULT_SCRYPT_LOG2_N = 17  # 128 MiB, about half a second: a backup may sit offline for years
SCRYPT_R = 8
SCRYPT_P = 1
MIN_SCRYPT_LOG2_N, MAX_SCRYPT_LOG2_N = 15, 20
MAX_SCRYPT_R, MAX_SCRYPT_P = 32, 16
MAX_SCRYPT_MEMORY = 256 * 2**20
MAX_SCRYPT_WORK = 2**23
MAX_ARCHIVE_BYTES = 64 * 2**20
_MAX_METADATA_BYTES = 16 * 2**20
_MAX_KEY_FILE_BYTES = 1024
_PRIVATE = stat.S_IRWXG | stat.S_IRWXO

P = ParamSpec("P")
T = TypeVar("T")


class KeyStoreReason(enum.StrEnum):
    """Why a key store operation failed."""

    NO_KEY = "NO_KEY"  # the agent has no active key (or there is nothing to export)
    NOT_FOUND = "NOT_FOUND"  # no such key id (or agent)
    DAMAGED = "DAMAGED"  # keys.json or a key file unreadable, or not matching each other
    REVOKED = "REVOKED"  # the key is revoked: it may not sign, nor be retired
    KEY_EXISTS = "KEY_EXISTS"  # the key id is taken (by another seed, for an import)
    INSECURE_PERMISSIONS = "INSECURE_PERMISSIONS"  # group/others may access, or not ours
    INVALID = "INVALID"  # an argument out of range: key id, naive time, seed length
    # (S105: reason names, not passwords)
    EMPTY_PASSPHRASE = "EMPTY_PASSPHRASE"  # noqa: S105
    WRONG_PASSPHRASE = "WRONG_PASSPHRASE"  # noqa: S105  # or the archive was altered
    NOT_AN_ARCHIVE = "NOT_AN_ARCHIVE"  # not this format, unknown version, absurd KDF
    IO_ERROR = "IO_ERROR"  # the file system refused (full disk, read-only, …)


class KeyStoreError(Exception):
    """A key store operation refused or failed, with its reason."""

    def __init__(self, reason: KeyStoreReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True, slots=True)
class AgentKey:
    """One key's public half and state, as ``keys.json`` records it (times in UTC)."""

    agent_id: uuid.UUID
    key_id: int
    public_key: bytes
    status: str
    created_at: datetime
    revoke_after: datetime | None
    revoked_at: datetime | None


def _os_errors_as_key_store_errors(method: Callable[P, T]) -> Callable[P, T]:
    # Callers (the CLI, the agent service) then handle one exception type, whatever the
    # file system says.
    @wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise KeyStoreError(KeyStoreReason.IO_ERROR, f"{where}{exc.strerror or exc}") from exc

    return wrapper


class KeyStore:
    """The keys under ``HOME/keys``. Every mutation of an agent's keys holds an exclusive
    ``flock`` on the agent's directory, every read a shared one, so processes on one
    machine may share a store."""

    def __init__(
        self, home: Path | None = None, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.home = Path(home) if home is not None else default_home()
        self.path = self.home / KEYS_DIR
        self._clock = clock or (lambda: datetime.now(UTC))

    # --- reading --------------------------------------------------------------------------

    @_os_errors_as_key_store_errors
    def agents(self) -> list[uuid.UUID]:
        """Agents with a ``keys.json``, in UUID order."""
        if not self._keys_dir_exists():
            return []
        found = []
        for name in os.listdir(self.path):
            try:
                agent_id = uuid.UUID(name)
            except ValueError:
                continue
            if str(agent_id) == name and (self.path / name / METADATA_FILE).is_file():
                found.append(agent_id)
        return sorted(found)

    @_os_errors_as_key_store_errors
    def keys(self, agent_id: uuid.UUID) -> list[AgentKey]:
        """The agent's keys by key id; empty for an agent the store does not know."""
        with self._agent(agent_id, exclusive=False) as fd:
            return [] if fd is None else sorted(self._load(fd, agent_id).values(), key=_id)

    def current(self, agent_id: uuid.UUID) -> AgentKey:
        """The active key with the highest key id: the one to sign new events with."""
        active = [k for k in self.keys(agent_id) if k.status == ACTIVE]
        if not active:
            raise KeyStoreError(KeyStoreReason.NO_KEY, f"agent {agent_id} has no active key")
        return active[-1]

    @_os_errors_as_key_store_errors
    def signer(self, agent_id: uuid.UUID, key_id: int) -> Signer:
        """The signer of an active or retiring key, checked against its public key."""
        with self._agent(agent_id, exclusive=False) as fd:
            key = self._get(fd, agent_id, key_id)
            if key.status == REVOKED:
                raise KeyStoreError(
                    KeyStoreReason.REVOKED, f"key {key_id} of agent {agent_id} is revoked"
                )
            assert fd is not None  # _get found the key, so the directory exists
            return self._load_signer(fd, key)

    def due_for_revocation(self, agent_id: uuid.UUID, now: datetime) -> list[AgentKey]:
        """Retiring keys whose ``revoke_after`` is at or before ``now``."""
        moment = _aware(now, "now")
        return [
            k
            for k in self.keys(agent_id)
            if k.status == RETIRING and k.revoke_after is not None and k.revoke_after <= moment
        ]

    # --- changing -------------------------------------------------------------------------

    @_os_errors_as_key_store_errors
    def create(self, agent_id: uuid.UUID, key_id: int | None = None) -> AgentKey:
        """A new random active key; ``key_id`` None takes the highest one used + 1, or 1."""
        with self._agent(agent_id, exclusive=True, create=True) as fd:
            assert fd is not None
            keys = self._load(fd, agent_id)
            if key_id is None:
                key_id = max([*keys, *_key_file_ids(fd)], default=0) + 1
            self._check_free(fd, agent_id, keys, _check_key_id(key_id))
            return self._add(fd, agent_id, keys, key_id, Signer.generate())

    @_os_errors_as_key_store_errors
    def import_seed(self, agent_id: uuid.UUID, key_id: int, seed: bytes) -> AgentKey:
        """Store an existing seed (e.g. ``keygen``'s ``agent.key``) as an active key. The
        same seed under the same id again is a no-op; the key id taken by another seed, or
        this seed stored under another id, is ``KEY_EXISTS``."""
        try:
            signer = Signer(parse_seed(seed))
        except VesError as exc:
            raise KeyStoreError(KeyStoreReason.INVALID, f"seed: {exc}") from None
        _check_key_id(key_id)
        with self._agent(agent_id, exclusive=True, create=True) as fd:
            assert fd is not None
            keys = self._load(fd, agent_id)
            for other in keys.values():
                if other.public_key == signer.public_key:
                    if other.key_id == key_id:
                        return other
                    raise KeyStoreError(
                        KeyStoreReason.KEY_EXISTS,
                        f"this seed is already key {other.key_id} of agent {agent_id}",
                    )
            self._check_free(fd, agent_id, keys, key_id)
            return self._add(fd, agent_id, keys, key_id, signer)

    @_os_errors_as_key_store_errors
    def retire(self, agent_id: uuid.UUID, key_id: int, revoke_after: datetime) -> AgentKey:
        """Mark a key retiring, to be revoked after ``revoke_after`` (retiring it again
        moves that time)."""
        after = _aware(revoke_after, "revoke_after")
        with self._agent(agent_id, exclusive=True) as fd:
            key = self._get(fd, agent_id, key_id)
            if key.status == REVOKED:
                raise KeyStoreError(
                    KeyStoreReason.REVOKED,
                    f"key {key_id} of agent {agent_id} is revoked already; it cannot retire",
                )
            assert fd is not None
            keys = self._load(fd, agent_id)
            keys[key_id] = replace(key, status=RETIRING, revoke_after=after)
            self._save(fd, agent_id, keys)
            return keys[key_id]

    @_os_errors_as_key_store_errors
    def mark_revoked(self, agent_id: uuid.UUID, key_id: int, at: datetime) -> AgentKey:
        """Revoke a key (active or retiring) and delete its seed. Revoking a revoked key
        keeps its first ``revoked_at``."""
        moment = _aware(at, "at")
        with self._agent(agent_id, exclusive=True) as fd:
            key = self._get(fd, agent_id, key_id)
            assert fd is not None
            if key.status != REVOKED:
                keys = self._load(fd, agent_id)
                key = keys[key_id] = replace(key, status=REVOKED, revoked_at=moment)
                # The record first: should the process die before the unlink, the seed is
                # left behind but the key is already refused.
                self._save(fd, agent_id, keys)
            _remove_seed(fd, key_id)
            return key

    # --- the encrypted archive ------------------------------------------------------------

    @_os_errors_as_key_store_errors
    def export_encrypted(
        self,
        passphrase: str,
        agent_ids: Sequence[uuid.UUID] | None = None,
        *,
        kdf_log2_n: int = DEFAULT_SCRYPT_LOG2_N,
    ) -> bytes:
        """Every key of the given agents (default: all), seeds included (none for revoked
        keys), sealed with the passphrase; the format is in the module's docstring."""
        secret = _passphrase_bytes(passphrase)
        if not MIN_SCRYPT_LOG2_N <= kdf_log2_n <= MAX_SCRYPT_LOG2_N:
            raise KeyStoreError(
                KeyStoreReason.INVALID,
                f"kdf_log2_n must be {MIN_SCRYPT_LOG2_N}..{MAX_SCRYPT_LOG2_N}",
            )
        chosen = sorted(set(agent_ids)) if agent_ids is not None else self.agents()
        agents = []
        for agent_id in chosen:
            with self._agent(agent_id, exclusive=False) as fd:
                keys = self._load(fd, agent_id) if fd is not None else {}
                if not keys:
                    raise KeyStoreError(
                        KeyStoreReason.NOT_FOUND, f"no keys for agent {agent_id} in {self.path}"
                    )
                assert fd is not None
                entries = []
                for key in sorted(keys.values(), key=_id):
                    seed = None
                    if key.status != REVOKED:
                        seed = self._load_signer(fd, key).seed.hex()
                    entries.append({**_entry_json(key), "seed": seed})
            agents.append({"agent_id": str(agent_id), "keys": entries})
        if not agents:
            raise KeyStoreError(KeyStoreReason.NO_KEY, f"no keys to export in {self.path}")
        document = {
            "format": ARCHIVE_CONTENTS,
            "version": ARCHIVE_VERSION,
            "exported_at": format_rfc3339(self._clock()),
            "agents": agents,
        }
        plaintext = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
        return _seal(secret, plaintext, kdf_log2_n)

    @_os_errors_as_key_store_errors
    def import_encrypted(
        self, data: bytes, passphrase: str, *, replace: bool = False
    ) -> list[AgentKey]:
        """Merge an archive into the store; returns the keys it added or changed (so
        importing the same archive twice returns nothing the second time).

        A key the store has already, with the same seed, keeps its state unless the
        archive's is further along (active → retiring → revoked). A key id that holds
        another seed here is ``KEY_EXISTS``, checked for the whole archive before anything
        is written, unless ``replace``, when the archive's key takes its place.
        """
        archive = _read_archive(_unseal(_passphrase_bytes(passphrase), data))
        changed: list[AgentKey] = []
        with ExitStack() as stack:
            # Every agent locked before any is planned, so the conflict check holds for the
            # whole archive when the writing starts.
            fds = {
                agent_id: stack.enter_context(self._agent(agent_id, exclusive=True, create=True))
                for agent_id in sorted(archive)
            }
            plans = []
            for agent_id, incoming in sorted(archive.items()):
                fd = fds[agent_id]
                assert fd is not None
                local = self._load(fd, agent_id)
                plans.append((agent_id, fd, local, self._plan(agent_id, local, incoming, replace)))
            for agent_id, fd, local, plan in plans:
                if not plan:
                    continue
                for key, seed in plan:
                    if seed is not None:
                        _write_file(fd, _key_file(key.key_id), seed.hex().encode() + b"\n")
                    local[key.key_id] = key
                self._save(fd, agent_id, local)
                for key, _seed in plan:
                    if key.status == REVOKED:
                        _remove_seed(fd, key.key_id)
                changed.extend(key for key, _seed in plan)
        return changed

    def _plan(
        self,
        agent_id: uuid.UUID,
        local: dict[int, AgentKey],
        incoming: list[tuple[AgentKey, bytes | None]],
        replace_conflicts: bool,
    ) -> list[tuple[AgentKey, bytes | None]]:
        plan: list[tuple[AgentKey, bytes | None]] = []
        for key, seed in incoming:
            mine = local.get(key.key_id)
            if mine is None or (mine.public_key != key.public_key and replace_conflicts):
                plan.append((key, seed))
            elif mine.public_key != key.public_key:
                raise KeyStoreError(
                    KeyStoreReason.KEY_EXISTS,
                    f"key {key.key_id} of agent {agent_id} is another key here; nothing was "
                    "imported (replace it with --replace, and the local key is lost)",
                )
            elif _STATUS_RANK[key.status] > _STATUS_RANK[mine.status]:
                moved = replace(
                    mine,
                    status=key.status,
                    revoke_after=key.revoke_after,
                    revoked_at=key.revoked_at,
                )
                plan.append((moved, None))
        return plan

    # --- the files ------------------------------------------------------------------------

    def _keys_dir_exists(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(st.st_mode):
            raise _symlink(self.path)
        _check_private(self.path, st, directory=True)
        return True

    def _ensure_keys_dir(self) -> None:
        try:
            self.home.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass  # a home we did not make is the user's to set up; only keys/ is checked
        else:
            os.chmod(self.home, 0o700)  # mkdir's mode passes through the umask
        _make_private_dir(self.path)

    @contextmanager
    def _agent(
        self, agent_id: uuid.UUID, *, exclusive: bool, create: bool = False
    ) -> Iterator[int | None]:
        """The agent's directory, opened and locked; None when it does not exist."""
        path = self.path / str(agent_id)
        if create:
            self._ensure_keys_dir()
            _make_private_dir(path)
        elif not self._keys_dir_exists():
            yield None
            return
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _symlink(path) from None
            raise
        try:
            _check_private(path, os.fstat(fd), directory=True)
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            if exclusive:
                _remove_stale_temporaries(fd)
            yield fd
        finally:
            os.close(fd)

    def _load(self, fd: int | None, agent_id: uuid.UUID) -> dict[int, AgentKey]:
        if fd is None:
            return {}
        where = self.path / str(agent_id) / METADATA_FILE
        raw = _read_file(fd, METADATA_FILE, where, _MAX_METADATA_BYTES)
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            if doc.get("format") != METADATA_FORMAT or doc.get("version") != METADATA_VERSION:
                raise ValueError(
                    f"format {doc.get('format')!r} version {doc.get('version')!r} is not "
                    f"{METADATA_FORMAT!r} version {METADATA_VERSION}"
                )
            if doc.get("agent_id") != str(agent_id):
                raise ValueError(f"it names agent {doc.get('agent_id')!r}")
            entries = doc.get("keys")
            if not isinstance(entries, list):
                raise ValueError("keys is not a list")
            keys: dict[int, AgentKey] = {}
            for entry in entries:
                key = _entry_from_json(agent_id, entry)
                if key.key_id in keys:
                    raise ValueError(f"key {key.key_id} is listed twice")
                keys[key.key_id] = key
        except (ValueError, TypeError, UnicodeDecodeError, VesError) as exc:
            raise KeyStoreError(KeyStoreReason.DAMAGED, f"{where}: {exc}") from None
        return keys

    def _save(self, fd: int, agent_id: uuid.UUID, keys: dict[int, AgentKey]) -> None:
        doc = {
            "format": METADATA_FORMAT,
            "version": METADATA_VERSION,
            "agent_id": str(agent_id),
            "keys": [_entry_json(k) for k in sorted(keys.values(), key=_id)],
        }
        _write_file(fd, METADATA_FILE, (json.dumps(doc, indent=2) + "\n").encode())

    def _get(self, fd: int | None, agent_id: uuid.UUID, key_id: int) -> AgentKey:
        key = self._load(fd, agent_id).get(key_id)
        if key is None:
            raise KeyStoreError(
                KeyStoreReason.NOT_FOUND, f"agent {agent_id} has no key {key_id} in {self.path}"
            )
        return key

    def _check_free(
        self, fd: int, agent_id: uuid.UUID, keys: dict[int, AgentKey], key_id: int
    ) -> None:
        if key_id in keys:
            raise KeyStoreError(
                KeyStoreReason.KEY_EXISTS, f"agent {agent_id} has a key {key_id} already"
            )
        if key_id in _key_file_ids(fd):
            # A seed without its record: a create that died before writing keys.json. It was
            # never handed out, but it is a secret, so it is for its owner to remove.
            path = self.path / str(agent_id) / _key_file(key_id)
            raise KeyStoreError(
                KeyStoreReason.DAMAGED,
                f"{path} exists but {METADATA_FILE} does not list it (an interrupted "
                f"create?); move it away to use key id {key_id}",
            )

    def _add(
        self, fd: int, agent_id: uuid.UUID, keys: dict[int, AgentKey], key_id: int, signer: Signer
    ) -> AgentKey:
        key = AgentKey(
            agent_id=agent_id,
            key_id=key_id,
            public_key=signer.public_key,
            status=ACTIVE,
            created_at=_aware(self._clock(), "clock"),
            revoke_after=None,
            revoked_at=None,
        )
        # The seed before its record: a crash between leaves an unlisted seed, never a
        # listed key without one.
        _write_file(fd, _key_file(key_id), signer.seed.hex().encode() + b"\n")
        keys[key_id] = key
        self._save(fd, agent_id, keys)
        return key

    def _load_signer(self, fd: int, key: AgentKey) -> Signer:
        path = self.path / str(key.agent_id) / _key_file(key.key_id)
        raw = _read_file(fd, _key_file(key.key_id), path, _MAX_KEY_FILE_BYTES)
        if raw is None:
            raise KeyStoreError(
                KeyStoreReason.DAMAGED, f"{path} is missing ({METADATA_FILE} lists the key)"
            )
        try:
            signer = Signer(raw.decode("ascii").strip())
        except (UnicodeDecodeError, VesError) as exc:
            raise KeyStoreError(KeyStoreReason.DAMAGED, f"{path}: not a seed ({exc})") from None
        if signer.public_key != key.public_key:
            raise KeyStoreError(
                KeyStoreReason.DAMAGED,
                f"{path} is not the key {METADATA_FILE} lists (public key "
                f"{signer.public_key.hex()[:16]}…, expected {key.public_key.hex()[:16]}…)",
            )
        return signer


# --- helpers ---------------------------------------------------------------------------------


def _id(key: AgentKey) -> int:
    return key.key_id


def _key_file(key_id: int) -> str:
    return f"{key_id}.key"


def _key_file_ids(fd: int) -> set[int]:
    ids = set()
    for name in os.listdir(fd):
        stem, dot, ext = name.partition(".")
        if dot and ext == "key" and stem.isdigit() and str(int(stem)) == stem:
            ids.add(int(stem))
    return ids


def _check_key_id(key_id: int) -> int:
    if type(key_id) is not int or not 0 <= key_id <= U32_MAX:
        raise KeyStoreError(KeyStoreReason.INVALID, f"key id must be 0..{U32_MAX}: {key_id!r}")
    return key_id


def _aware(moment: datetime, what: str) -> datetime:
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise KeyStoreError(KeyStoreReason.INVALID, f"{what} must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _time_text(moment: datetime | None) -> str | None:
    return None if moment is None else format_rfc3339(moment)


def _entry_json(key: AgentKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "public_key": key.public_key.hex(),
        "status": key.status,
        "created_at": format_rfc3339(key.created_at),
        "revoke_after": _time_text(key.revoke_after),
        "revoked_at": _time_text(key.revoked_at),
    }


def _entry_from_json(agent_id: uuid.UUID, entry: Any) -> AgentKey:
    """An entry of keys.json or of an archive; ValueError (or VesError) when malformed."""
    if not isinstance(entry, dict):
        raise ValueError("a key entry is not a JSON object")
    key_id, status, public_key = entry.get("key_id"), entry.get("status"), entry.get("public_key")
    if type(key_id) is not int or not 0 <= key_id <= U32_MAX:
        raise ValueError(f"key_id {key_id!r} is not 0..{U32_MAX}")
    if status not in STATUSES:
        raise ValueError(f"key {key_id}: status {status!r} is not one of {', '.join(STATUSES)}")
    if not isinstance(public_key, str):
        raise ValueError(f"key {key_id}: public_key is not a string")

    created_at = _moment(entry, "created_at", key_id, required=True)
    assert created_at is not None
    return AgentKey(
        agent_id=agent_id,
        key_id=key_id,
        public_key=parse_public_key(bytes.fromhex(public_key)),
        status=status,
        created_at=created_at,
        revoke_after=_moment(entry, "revoke_after", key_id, required=status == RETIRING),
        revoked_at=_moment(entry, "revoked_at", key_id, required=status == REVOKED),
    )


def _moment(entry: dict[str, Any], name: str, key_id: int, *, required: bool) -> datetime | None:
    value = entry.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise ValueError(f"key {key_id}: {name} is not an RFC 3339 string")
    return parse_rfc3339(value)


def _symlink(path: Path) -> KeyStoreError:
    return KeyStoreError(
        KeyStoreReason.INSECURE_PERMISSIONS,
        f"{path} is a symbolic link; the key store does not follow links inside it",
    )


def _check_private(path: Path, st: os.stat_result, *, directory: bool) -> None:
    kind_ok = stat.S_ISDIR(st.st_mode) if directory else stat.S_ISREG(st.st_mode)
    if not kind_ok:
        raise KeyStoreError(
            KeyStoreReason.DAMAGED, f"{path} is not a {'directory' if directory else 'file'}"
        )
    if st.st_uid != os.geteuid():
        raise KeyStoreError(
            KeyStoreReason.INSECURE_PERMISSIONS,
            f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); "
            "refusing to trust keys another user could have written",
        )
    if st.st_mode & _PRIVATE:
        want = "700" if directory else "600"
        raise KeyStoreError(
            KeyStoreReason.INSECURE_PERMISSIONS,
            f"{path} is accessible by group or others (mode "
            f"{stat.S_IMODE(st.st_mode):04o}); refusing to use it: run chmod {want} {path}",
        )


def _make_private_dir(path: Path) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    else:
        os.chmod(path, 0o700)  # mkdir's mode passes through the umask
        parent = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise _symlink(path)
    _check_private(path, st, directory=True)


def _read_file(dir_fd: int, name: str, path: Path, limit: int) -> bytes | None:
    """A private file's bytes, None when absent; refused when wider than 0600 or a link."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink(path) from None
        raise
    try:
        st = os.fstat(fd)
        _check_private(path, st, directory=False)
        if st.st_size > limit:
            raise KeyStoreError(
                KeyStoreReason.DAMAGED, f"{path} is {st.st_size} bytes, more than {limit}"
            )
        chunks = []
        while chunk := os.read(fd, limit + 1):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_file(dir_fd: int, name: str, data: bytes) -> None:
    """Replace ``name`` atomically with a 0600 file holding ``data``, durably."""
    temporary = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(
        temporary,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    try:
        try:
            os.fchmod(fd, 0o600)  # O_CREAT's mode passes through the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(temporary, dir_fd=dir_fd)
        raise
    os.fsync(dir_fd)


def _remove_seed(dir_fd: int, key_id: int) -> None:
    try:
        os.unlink(_key_file(key_id), dir_fd=dir_fd)
    except FileNotFoundError:
        return
    os.fsync(dir_fd)


def _remove_stale_temporaries(dir_fd: int) -> None:
    # Left by a writer that died between creating and renaming; the lock we hold means
    # no writer is alive now.
    for name in os.listdir(dir_fd):
        if name.startswith(".") and name.endswith(".tmp"):
            with suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)


# --- the archive -----------------------------------------------------------------------------


def _passphrase_bytes(passphrase: str) -> bytes:
    if not isinstance(passphrase, str) or not passphrase:
        raise KeyStoreError(
            KeyStoreReason.EMPTY_PASSPHRASE, "an empty passphrase would protect nothing"
        )
    # NFC: the same passphrase typed on two systems may arrive composed or decomposed.
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive(secret: bytes, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=2**log2_n, r=r, p=p).derive(secret)


def _seal(secret: bytes, plaintext: bytes, log2_n: int) -> bytes:
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    header = (
        ARCHIVE_MAGIC
        + bytes([ARCHIVE_VERSION, KDF_SCRYPT, log2_n, SCRYPT_R, SCRYPT_P])
        + salt
        + nonce
    )
    assert len(header) == HEADER_SIZE
    key = _derive(secret, salt, log2_n, SCRYPT_R, SCRYPT_P)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def _not_an_archive(why: str) -> KeyStoreError:
    return KeyStoreError(KeyStoreReason.NOT_AN_ARCHIVE, f"not a key archive: {why}")


def _unseal(secret: bytes, data: bytes) -> bytes:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise _not_an_archive(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_ARCHIVE_BYTES:
        raise _not_an_archive(f"{len(data)} bytes is more than {MAX_ARCHIVE_BYTES}")
    if not ARCHIVE_MAGIC.startswith(data[: len(ARCHIVE_MAGIC)]):
        raise _not_an_archive(f"it does not start with {ARCHIVE_MAGIC.decode()!r}")
    if len(data) < HEADER_SIZE + TAG_SIZE:
        raise _not_an_archive(f"{len(data)} bytes is too short (truncated?)")
    at = len(ARCHIVE_MAGIC)
    version, kdf, log2_n, r, p = data[at : at + 5]
    if version != ARCHIVE_VERSION:
        raise _not_an_archive(
            f"format version {version} is not supported (this build reads {ARCHIVE_VERSION})"
        )
    if kdf != KDF_SCRYPT:
        raise _not_an_archive(f"KDF {kdf} is unknown (1 is scrypt)")
    # Bounded before deriving: until the tag is checked, the header is anyone's.
    if not (
        MIN_SCRYPT_LOG2_N <= log2_n <= MAX_SCRYPT_LOG2_N
        and 1 <= r <= MAX_SCRYPT_R
        and 1 <= p <= MAX_SCRYPT_P
        and 128 * r * 2**log2_n <= MAX_SCRYPT_MEMORY
        and 2**log2_n * r * p <= MAX_SCRYPT_WORK
    ):
        raise _not_an_archive(
            f"scrypt parameters N=2**{log2_n} r={r} p={p} are outside the accepted bounds "
            f"(at most {MAX_SCRYPT_MEMORY // 2**20} MiB and N*r*p <= 2**23)"
        )
    header = data[:HEADER_SIZE]
    salt, nonce = header[at + 5 : at + 21], header[at + 21 : HEADER_SIZE]
    key = _derive(secret, salt, log2_n, r, p)
    try:
        return AESGCM(key).decrypt(nonce, data[HEADER_SIZE:], header)
    except InvalidTag:
        raise KeyStoreError(
            KeyStoreReason.WRONG_PASSPHRASE,
            "wrong passphrase, or the archive was altered (or truncated): the two cannot be "
            "told apart",
        ) from None


def _read_archive(plaintext: bytes) -> dict[uuid.UUID, list[tuple[AgentKey, bytes | None]]]:
    """The authenticated plaintext's keys by agent; NOT_AN_ARCHIVE when malformed."""
    try:
        doc = json.loads(plaintext.decode("utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != ARCHIVE_CONTENTS:
            raise ValueError(f"the contents are not a {ARCHIVE_CONTENTS} document")
        if doc.get("version") != ARCHIVE_VERSION:
            raise ValueError(f"contents version {doc.get('version')!r} is not supported")
        agents = doc.get("agents")
        if not isinstance(agents, list):
            raise ValueError("agents is not a list")
        found: dict[uuid.UUID, list[tuple[AgentKey, bytes | None]]] = {}
        for agent in agents:
            if not isinstance(agent, dict) or not isinstance(agent.get("agent_id"), str):
                raise ValueError("an agent without an agent_id")
            agent_id = uuid.UUID(agent["agent_id"])
            if agent_id in found:
                raise ValueError(f"agent {agent_id} is listed twice")
            entries = agent.get("keys")
            if not isinstance(entries, list):
                raise ValueError(f"agent {agent_id}: keys is not a list")
            keys: list[tuple[AgentKey, bytes | None]] = []
            for entry in entries:
                key = _entry_from_json(agent_id, entry)
                if any(k.key_id == key.key_id for k, _ in keys):
                    raise ValueError(f"agent {agent_id}: key {key.key_id} is listed twice")
                keys.append((key, _archived_seed(key, entry.get("seed"))))
            found[agent_id] = keys
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError, VesError) as exc:
        raise _not_an_archive(str(exc)) from None
    return found


def _archived_seed(key: AgentKey, value: Any) -> bytes | None:
    where = f"agent {key.agent_id} key {key.key_id}"
    if key.status == REVOKED:
        return None  # a revoked key's seed is not kept, even should an archive carry one
    if not isinstance(value, str):
        raise ValueError(f"{where}: {key.status} without a seed")
    seed = parse_seed(bytes.fromhex(value))
    if Signer(seed).public_key != key.public_key:
        raise ValueError(f"{where}: the seed is not the public key's")
    return seed
