#!/usr/bin/env python3
"""Checks the crate dependency rules of docs/design.md against `cargo metadata`.

Exit status 1 with one line per broken rule; 0 and a summary when all hold.
"""
import json
import pathlib
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--locked"], cwd=ROOT))

members = {p["id"]: p for p in meta["packages"] if p["id"] in meta["workspace_members"]}
by_name = {p["name"]: p for p in members.values()}
ours = set(by_name)

def direct(name, kinds=(None,)):
    """Direct normal (non-dev, non-build) dependency names of a workspace crate."""
    return {d["name"] for d in by_name[name]["dependencies"] if d["kind"] in kinds}

# Transitive normal dependencies from the resolved graph.
nodes = {n["id"]: n for n in meta["resolve"]["nodes"]}
id_name = {p["id"]: p["name"] for p in meta["packages"]}

def transitive(name):
    start = by_name[name]["id"]
    seen, stack = set(), [start]
    while stack:
        for dep in nodes[stack.pop()]["deps"]:
            if not any(k["kind"] is None for k in dep["dep_kinds"]):
                continue
            if dep["pkg"] not in seen:
                seen.add(dep["pkg"])
                stack.append(dep["pkg"])
    return {id_name[i] for i in seen}

errors = []

def rule(ok, text):
    if not ok:
        errors.append(text)

# 1. The leaves depend on no other Keyshift crate.
for leaf in ("keyshift-crypto", "keyshift-store", "keyshift-api"):
    if leaf in ours:
        bad = direct(leaf) & ours
        rule(not bad, f"{leaf} must depend on no Keyshift crate, depends on {sorted(bad)}")

# 2. The vault depends on crypto, store and api only, and on no web, SQL or CLI framework.
if "keyshift-vault" in ours:
    bad = direct("keyshift-vault") & ours - {"keyshift-crypto", "keyshift-store", "keyshift-api"}
    rule(not bad, f"keyshift-vault may depend on crypto, store and api only, not {sorted(bad)}")
    banned = direct("keyshift-vault") & {"axum", "hyper", "sqlx", "clap", "reqwest", "rustls", "tokio-rustls"}
    rule(not banned, f"keyshift-vault must not depend on {sorted(banned)}")
    # It sees the Store trait only: no backend feature of keyshift-store is switched on by it.
    for d in by_name["keyshift-vault"]["dependencies"]:
        if d["name"] == "keyshift-store" and d["kind"] is None:
            rule(not d["uses_default_features"] and not d["features"],
                 "keyshift-vault must take keyshift-store without backend features")

# 3. Store backends see sealed bytes only: no cryptography in the store.
if "keyshift-store" in ours:
    crypto = direct("keyshift-store") & {"aws-lc-rs", "ring", "openssl", "keyshift-crypto", "rustls"}
    rule(not crypto, f"keyshift-store must not reach cryptography: {sorted(crypto)}")

# 4. The server never names a concrete backend.
if "keyshift-server" in ours:
    bad = direct("keyshift-server") & {"sqlx", "keyshift-store", "rusqlite", "tokio-postgres"}
    rule(not bad, f"keyshift-server must not name a storage backend: {sorted(bad)}")

# 5. Client-side crates never reach a server crate.
server_side = {"keyshift-server", "keyshift-vault", "keyshift-store", "keyshift-cli"}
for client in ("keyshift-client", "keyshift-envelope", "keyshift-migrate"):
    if client in ours:
        bad = transitive(client) & server_side
        rule(not bad, f"{client} must not reach server crates: {sorted(bad)}")

# 5b. The client speaks the wire format only: among Keyshift crates it depends on keyshift-api, so
# tools built on it (envelope CLI, migration engine) never link the server, vault, store or testkit.
if "keyshift-client" in ours:
    bad = direct("keyshift-client") & ours - {"keyshift-api"}
    rule(not bad, f"keyshift-client may depend on keyshift-api only among Keyshift crates, not {sorted(bad)}")
    bad = transitive("keyshift-client") & (server_side | {"keyshift-testkit", "keyshift-crypto"})
    rule(not bad, f"keyshift-client must not reach {sorted(bad)}")

# 5c. The envelope crate is a client-side library: Keyshift's crypto and wire types, and (its
# optional `remote` feature) keyshift-client for a KEK in a vault; no server, store, vault, web or
# SQL framework.
if "keyshift-envelope" in ours:
    bad = direct("keyshift-envelope") & ours - {"keyshift-crypto", "keyshift-api", "keyshift-client"}
    rule(not bad, f"keyshift-envelope may depend on keyshift-crypto, keyshift-api and keyshift-client only, not {sorted(bad)}")
    banned = transitive("keyshift-envelope") & {"axum", "sqlx", "keyshift-server", "keyshift-store", "keyshift-vault"}
    rule(not banned, f"keyshift-envelope must not reach {sorted(banned)}")

# 5d. Client-side crates take keyshift-crypto without its PKCS#11 backend (feature `pkcs11`): tools
# that only encrypt envelopes or talk to a vault never build or load a PKCS#11 module.
for client in ("keyshift-client", "keyshift-envelope", "keyshift-migrate"):
    if client in ours:
        for d in by_name[client]["dependencies"]:
            if d["name"] == "keyshift-crypto" and d["kind"] is None:
                rule("pkcs11" not in d["features"],
                     f"{client} must take keyshift-crypto without its pkcs11 feature")

# 6. Only keyshift-crypto names aws-lc-rs.
for name in sorted(ours):
    if name != "keyshift-crypto":
        rule("aws-lc-rs" not in direct(name), f"{name} names aws-lc-rs; only keyshift-crypto may")

# 7. Every crate takes the workspace lints (unsafe_code = forbid).
if tomllib:
    ws = tomllib.loads((ROOT / "Cargo.toml").read_text())
    rule(ws.get("workspace", {}).get("lints", {}).get("rust", {}).get("unsafe_code") == "forbid",
         "[workspace.lints.rust] must set unsafe_code = \"forbid\"")
    for name, pkg in sorted(by_name.items()):
        manifest = tomllib.loads(pathlib.Path(pkg["manifest_path"]).read_text())
        rule(manifest.get("lints", {}).get("workspace") is True, f"{name} must have [lints] workspace = true")

if errors:
    for e in errors:
        print(f"dependency rule broken: {e}")
    sys.exit(1)
print(f"dependency rules hold for {len(ours)} crates")
