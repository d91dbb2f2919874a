#!/usr/bin/env python3
"""python-tuf side of esync-tuf-client's interoperability test (tests/interop.rs).

  tuf_interop.py generate OUTDIR
      Writes one directory per scenario, signed with python-tuf's Metadata API
      and securesystemslib's CryptoSigner (ed25519, ECDSA P-256/P-384, RSA-PSS):
        OUTDIR/NAME/scenario.json   {"expect": "accept"|"refuse", "target": ...,
                                     "phases": N, "about": ...}
        OUTDIR/NAME/root.json       the root the clients are initialised with
        OUTDIR/NAME/phaseK/metadata/ and phaseK/targets/   (K = 1..N)
      The clients refresh on every phase but the last and download the target
      on the last; the verdict is the exit status of that download.

  tuf_interop.py client METADATA_DIR METADATA_URL TARGET_URL TARGET_DIR init ROOT
  tuf_interop.py client METADATA_DIR METADATA_URL TARGET_URL TARGET_DIR refresh
  tuf_interop.py client METADATA_DIR METADATA_URL TARGET_URL TARGET_DIR download NAME
      python-tuf's ngclient with the TUF conformance client contract; exit
      status 0 on success, 1 on any failure.
"""

import copy
import json
import os
import shutil
import sys
from datetime import datetime, timedelta, timezone

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

FUTURE = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=365)
PAST = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=1)
TARGET = "file.txt"
DELEGATED_TARGET = "team/file.txt"


def signer(kind):
    if kind == "ed25519":
        return CryptoSigner.generate_ed25519()
    if kind == "p256":
        return CryptoSigner.generate_ecdsa()
    if kind == "p384":
        return CryptoSigner.generate_ecdsa(scheme="ecdsa-sha2-nistp384")
    if kind == "rsa":
        return CryptoSigner.generate_rsa()
    raise ValueError(kind)


class Repo:
    """A consistent-snapshot repository kept in memory, written per phase."""

    def __init__(self, kinds, targets_kinds=None, targets_threshold=1):
        self.signers = {role: [signer(kinds[role])] for role in kinds}
        if targets_kinds:
            self.signers["targets"] = [signer(k) for k in targets_kinds]
        root = Root(expires=FUTURE, consistent_snapshot=True)
        for role, signers in self.signers.items():
            for s in signers:
                root.add_key(s.public_key, role)
        root.roles["targets"].threshold = targets_threshold
        self.root = Metadata(root)
        self.roots = []
        self.targets = Metadata(Targets(expires=FUTURE))
        self.delegated = {}
        self.delegated_signers = {}
        self.snapshot = Metadata(Snapshot(expires=FUTURE))
        self.timestamp = Metadata(Timestamp(expires=FUTURE))
        self.data = {}
        self.sign_root(self.signers["root"])
        self.files = {}

    def sign_root(self, signers):
        self.root.signatures.clear()
        for s in signers:
            self.root.sign(s, append=True)
        self.roots.append(self.root.to_bytes(JSONSerializer(compact=False)))

    def add_target(self, name, data, role="targets"):
        md = self.targets if role == "targets" else self.delegated[role]
        md.signed.targets[name] = TargetFile.from_data(name, data, ["sha256"])
        self.data[name] = data

    def delegate(self, name, kind, paths):
        s = signer(kind)
        self.delegated_signers[name] = [s]
        self.targets.signed.delegations = Delegations(
            keys={s.public_key.keyid: s.public_key},
            roles={
                name: DelegatedRole(
                    name=name,
                    keyids=[s.public_key.keyid],
                    threshold=1,
                    terminating=True,
                    paths=paths,
                )
            },
        )
        self.delegated[name] = Metadata(Targets(expires=FUTURE))

    def publish(self, edit=None, signers=None):
        """Bumps every role, signs and returns {path: bytes}."""
        edit = edit or (lambda role, md: None)
        signers = signers or {}
        files = {}
        ser = JSONSerializer(compact=False)
        for i, raw in enumerate(self.roots):
            files[f"metadata/{i + 1}.root.json"] = raw
        roles = [("targets", self.targets, self.signers["targets"])] + [
            (n, md, self.delegated_signers[n]) for n, md in self.delegated.items()
        ]
        for name, md, default in roles:
            md.signed.version += 1
            edit(name, md)
            md.signatures.clear()
            for s in signers.get(name, default):
                md.sign(s, append=True)
            files[f"metadata/{md.signed.version}.{name}.json"] = md.to_bytes(ser)
            self.snapshot.signed.meta[f"{name}.json"] = MetaFile(version=md.signed.version)
        for name, md in [("snapshot", self.snapshot), ("timestamp", self.timestamp)]:
            md.signed.version += 1
            if name == "timestamp":
                md.signed.snapshot_meta = MetaFile(version=self.snapshot.signed.version)
            edit(name, md)
            md.signatures.clear()
            for s in signers.get(name, self.signers[name]):
                md.sign(s, append=True)
            path = "metadata/timestamp.json" if name == "timestamp" else (
                f"metadata/{md.signed.version}.snapshot.json")
            files[path] = md.to_bytes(ser)
        for name, data in self.data.items():
            digest = self.targets_info(name).hashes["sha256"]
            head, _, base = name.rpartition("/")
            files[f"targets/{head + '/' if head else ''}{digest}.{base}"] = data
        self.files.update(files)
        return dict(self.files)

    def targets_info(self, name):
        for md in [self.targets] + list(self.delegated.values()):
            if name in md.signed.targets:
                return md.signed.targets[name]
        raise KeyError(name)

    def rotate_root(self, kind, sign_with_old=True, sign_with_new=True):
        """New root keys of `kind` (and every other role too)."""
        old = self.signers["root"]
        new = {role: [signer(kind)] for role in ["root", "targets", "snapshot", "timestamp"]}
        root = self.root.signed
        for role in new:
            for keyid in list(root.roles[role].keyids):
                root.revoke_key(keyid, role)
            for s in new[role]:
                root.add_key(s.public_key, role)
        root.version += 1
        self.signers.update(new)
        self.sign_root((old if sign_with_old else []) + (new["root"] if sign_with_new else []))


def write(outdir, name, expect, about, root_bytes, phases, target=TARGET):
    d = os.path.join(outdir, name)
    os.makedirs(d)
    with open(os.path.join(d, "root.json"), "wb") as f:
        f.write(root_bytes)
    for k, files in enumerate(phases, 1):
        for path, data in files.items():
            p = os.path.join(d, f"phase{k}", path)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
    with open(os.path.join(d, "scenario.json"), "w") as f:
        json.dump({"expect": expect, "target": target, "phases": len(phases), "about": about}, f)


def same(kind):
    return {r: kind for r in ["root", "targets", "snapshot", "timestamp"]}


def generate(outdir):
    payload = b"interop payload\n"
    for kind in ["ed25519", "p256", "p384", "rsa"]:
        r = Repo(same(kind))
        r.add_target(TARGET, payload)
        write(outdir, f"{kind}-good", "accept", f"every role {kind}", r.roots[0], [r.publish()])

        r = Repo(same(kind))
        r.add_target(TARGET, payload)
        files = r.publish()
        first = dict(files)
        files = r.publish()
        rolled = dict(files)
        rolled["metadata/timestamp.json"] = first["metadata/timestamp.json"]
        write(outdir, f"{kind}-timestamp-rollback", "refuse",
              "timestamp v2 trusted, then v1 served", r.roots[0], [files, rolled])

        r = Repo(same(kind))
        r.add_target(TARGET, payload)

        def expire(role, md):
            if role == "timestamp":
                md.signed.expires = PAST
        write(outdir, f"{kind}-expired-timestamp", "refuse", "timestamp expired yesterday",
              r.roots[0], [r.publish(edit=expire)])

    # Root rotation from one key type to another, every role re-keyed.
    for a, b in [("ed25519", "p256"), ("p256", "rsa"), ("rsa", "ed25519")]:
        r = Repo(same(a))
        r.add_target(TARGET, payload)
        first = r.publish()
        r.rotate_root(b)
        write(outdir, f"rotate-{a}-to-{b}", "accept",
              f"root v2 signed by the old {a} and new {b} root keys",
              r.roots[0], [first, r.publish()])
        r = Repo(same(a))
        r.add_target(TARGET, payload)
        r.rotate_root(b, sign_with_old=False)
        write(outdir, f"rotate-{a}-to-{b}-without-old-key", "refuse",
              "root v2 signed by its new keys only", r.roots[0], [r.publish()])
        r = Repo(same(a))
        r.add_target(TARGET, payload)
        r.rotate_root(b, sign_with_new=False)
        write(outdir, f"rotate-{a}-to-{b}-without-new-key", "refuse",
              "root v2 signed by the old keys only", r.roots[0], [r.publish()])

    # Threshold 2 with mixed key types on the targets role.
    mixed = ["p256", "ed25519", "rsa"]
    r = Repo(same("ed25519"), targets_kinds=mixed, targets_threshold=2)
    r.add_target(TARGET, payload)
    write(outdir, "threshold2-mixed-all-sign", "accept", "targets: 3 keys of 3 types, all sign",
          r.roots[0], [r.publish()])
    for drop in range(3):
        r = Repo(same("ed25519"), targets_kinds=mixed, targets_threshold=2)
        r.add_target(TARGET, payload)
        signers = {"targets": [s for i, s in enumerate(r.signers["targets"]) if i != drop]}
        write(outdir, f"threshold2-mixed-without-{mixed[drop]}", "accept",
              "targets: 2 of 3 mixed keys sign", r.roots[0], [r.publish(signers=signers)])
    r = Repo(same("ed25519"), targets_kinds=mixed, targets_threshold=2)
    r.add_target(TARGET, payload)
    write(outdir, "threshold2-mixed-one-signs", "refuse", "targets: 1 of 3 mixed keys signs",
          r.roots[0], [r.publish(signers={"targets": r.signers["targets"][:1]})])

    # The same signature twice (one keyid twice in the signatures array).
    r = Repo(same("ed25519"), targets_kinds=mixed, targets_threshold=2)
    r.add_target(TARGET, payload)
    files = r.publish(signers={"targets": r.signers["targets"][:1]})
    path = f"metadata/{r.targets.signed.version}.targets.json"
    doc = json.loads(files[path])
    doc["signatures"].append(copy.deepcopy(doc["signatures"][0]))
    files[path] = json.dumps(doc, indent=1).encode()
    # The snapshot lists versions only, so the edited file still chains.
    write(outdir, "threshold2-duplicate-keyid", "refuse",
          "targets: one signature twice (a keyid twice)", r.roots[0], [files])

    # Delegations, each with another key type than the delegator.
    for kind in ["p256", "rsa", "ed25519"]:
        r = Repo(same("ed25519" if kind != "ed25519" else "p256"))
        r.add_target(TARGET, payload)
        r.delegate("team", kind, ["team/*"])
        r.add_target(DELEGATED_TARGET, b"delegated payload\n", role="team")
        write(outdir, f"delegation-{kind}", "accept", f"team/* delegated to a {kind} key",
              r.roots[0], [r.publish()], target=DELEGATED_TARGET)
    r = Repo(same("ed25519"))
    r.add_target(TARGET, payload)
    r.delegate("team", "p256", ["team/*"])
    r.add_target(DELEGATED_TARGET, b"delegated payload\n", role="team")
    write(outdir, "delegation-signed-by-wrong-key", "refuse", "team signed by a stranger's key",
          r.roots[0], [r.publish(signers={"team": [signer("p256")]})], target=DELEGATED_TARGET)
    r = Repo(same("rsa"))
    r.add_target(TARGET, payload)
    r.delegate("team", "p256", ["team/*"])
    r.add_target(DELEGATED_TARGET, b"delegated payload\n", role="team")
    r.publish()  # team v1 (its file stays served)
    files = r.publish()  # team v2, trusted through snapshot v2

    def roll(role, md):
        # Snapshot v3 listing team v1 again: a rolled-back delegated role.
        if role == "snapshot":
            md.signed.meta["team.json"] = MetaFile(version=1)
    rolled = r.publish(edit=roll)
    write(outdir, "delegation-rollback", "refuse", "snapshot rolls team back from v2 to v1",
          r.roots[0], [files, rolled], target=DELEGATED_TARGET)

    # A target whose bytes differ from the signed hash.
    r = Repo(same("p256"))
    r.add_target(TARGET, payload)
    files = r.publish()
    for p in list(files):
        if p.startswith("targets/"):
            files[p] = b"tampered payload\n"
    write(outdir, "p256-target-tampered", "refuse", "target bytes differ from the signed hash",
          r.roots[0], [files])


def client(argv):
    from tuf.ngclient import Updater

    metadata_dir, metadata_url, target_url, target_dir, cmd, *rest = argv
    try:
        if cmd == "init":
            os.makedirs(metadata_dir, exist_ok=True)
            shutil.copyfile(rest[0], os.path.join(metadata_dir, "root.json"))
            return 0
        updater = Updater(metadata_dir, metadata_url, target_dir, target_url, bootstrap=None)
        updater.refresh()
        if cmd == "download":
            info = updater.get_targetinfo(rest[0])
            if info is None:
                print(f"target {rest[0]} not found", file=sys.stderr)
                return 1
            os.makedirs(target_dir, exist_ok=True)
            updater.download_target(info)
        return 0
    except Exception as e:  # noqa: BLE001 -- the contract: any failure is exit 1
        print(f"python-tuf: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    if sys.argv[1] == "generate":
        generate(sys.argv[2])
        sys.exit(0)
    if sys.argv[1] == "client":
        sys.exit(client(sys.argv[2:]))
    sys.exit(f"usage: {sys.argv[0]} generate OUTDIR | client ...")
