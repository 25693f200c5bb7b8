// KeyClient (@azure/keyvault-keys) against Keyshift: create, get, list/paging, delete/recover/purge, rotate, rng.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  admin,
  credential,
  httpsRequest,
  keyClient,
  kv2Url,
  publicKeyOf,
  recorder,
  unique,
  vaultUrl,
} from "./helpers.mjs";

const VERSION_RE = /^[0-9a-f]{32}$/;

function assertKid(key, name, url = vaultUrl) {
  const prefix = `${url}/keys/${name}/`;
  assert.ok(key.id.startsWith(prefix), `kid ${key.id} does not start with ${prefix}`);
  assert.match(key.properties.version, VERSION_RE);
  assert.equal(key.id, prefix + key.properties.version);
  assert.equal(key.name, name);
}

test("challenge handshake, api%2Dversion on the wire, token scope and tenant", async () => {
  const rec = recorder();
  const client = keyClient(rec);
  const name = unique("js-hs");
  const key = await client.createEcKey(name, { curve: "P-256" });
  assertKid(key, name);
  assert.equal(rec.log[0].status, 401, "the first (bodiless) request gets the challenge");
  assert.equal(rec.log[1].status, 200);
  for (const e of rec.log) {
    assert.ok(e.url.includes("api%2Dversion=2025-07-01"), `JS sends the encoded query name: ${e.url}`);
  }
  const call = credential.calls.at(-1);
  assert.equal(call.scope, `${vaultUrl}/.default`);
  assert.equal(call.tenantId, admin.tenant_id);
});

test("create RSA, RSA-HSM, EC (all curves), oct-HSM", async () => {
  const client = keyClient();
  const rsa = await client.createRsaKey(unique("js-rsa"), { keySize: 2048 });
  assert.equal(rsa.keyType, "RSA");
  assert.equal(rsa.key.n.length, 256);
  assert.deepEqual([...rsa.key.e], [1, 0, 1]);
  assert.equal(rsa.key.d, undefined);
  assert.deepEqual(new Set(rsa.keyOperations), new Set(["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]));
  assert.equal(publicKeyOf(rsa.key).asymmetricKeyDetails.modulusLength, 2048);
  assert.equal(rsa.properties.enabled, true);
  assert.equal(rsa.properties.recoverableDays, 90);
  assert.equal(rsa.properties.recoveryLevel, "Recoverable+Purgeable");
  assert.ok(rsa.properties.createdOn instanceof Date);

  const rsaHsm = await client.createRsaKey(unique("js-rsahsm"), { keySize: 3072, hsm: true });
  assert.equal(rsaHsm.keyType, "RSA-HSM");
  assert.equal(rsaHsm.key.n.length, 384);

  for (const [curve, width] of [["P-256", 32], ["P-384", 48], ["P-521", 66], ["P-256K", 32]]) {
    const ec = await client.createEcKey(unique("js-ec"), { curve });
    assert.equal(ec.keyType, "EC");
    assert.equal(ec.key.crv, curve);
    assert.equal(ec.key.x.length, width, `${curve} x width`);
    assert.equal(ec.key.y.length, width, `${curve} y width`);
    assert.equal(ec.key.d, undefined);
    if (curve !== "P-256K") publicKeyOf(ec.key); // node rejects points that are not on the curve
  }
  const ecHsm = await client.createEcKey(unique("js-echsm"), { curve: "P-256", hsm: true });
  assert.equal(ecHsm.keyType, "EC-HSM");

  for (const keySize of [128, 192, 256]) {
    const oct = await client.createOctKey(unique("js-oct"), { keySize, hsm: true });
    assert.equal(oct.keyType, "oct-HSM");
    assert.equal(oct.key.k, undefined, "oct key material is never returned");
  }

  const tagged = await client.createKey(unique("js-opts"), "EC", {
    curve: "P-384",
    tags: { a: "b" },
    keyOps: ["sign"],
    notBefore: new Date(Math.floor(Date.now() / 1000) * 1000 - 60_000),
    expiresOn: new Date(Math.floor(Date.now() / 1000) * 1000 + 86_400_000),
    enabled: true,
  });
  assert.deepEqual(tagged.properties.tags, { a: "b" });
  assert.deepEqual(tagged.keyOperations, ["sign"]);
  assert.ok(tagged.properties.expiresOn > new Date());
});

test("get latest and by version (GET /keys/{name}/)", async () => {
  const rec = recorder();
  const client = keyClient(rec);
  const name = unique("js-get");
  const v1 = await client.createEcKey(name, { curve: "P-256" });
  const v2 = await client.createEcKey(name, { curve: "P-256" });
  assert.notEqual(v1.properties.version, v2.properties.version);
  rec.clear();
  const latest = await client.getKey(name);
  assert.equal(latest.id, v2.id);
  assert.deepEqual(latest.key.x, v2.key.x);
  assert.equal(rec.find("GET", `/keys/${name}/`).length, 1, JSON.stringify(rec.log));
  const old = await client.getKey(name, { version: v1.properties.version });
  assert.equal(old.id, v1.id);
  assert.deepEqual(old.key.y, v1.key.y);
  await assert.rejects(client.getKey(name, { version: "0123456789abcdef0123456789abcdef" }), { statusCode: 404 });
  await assert.rejects(client.getKey(unique("js-missing")), (e) => {
    assert.equal(e.statusCode, 404);
    assert.equal(e.code, "KeyNotFound");
    return true;
  });
});

test("update key properties", async () => {
  const client = keyClient();
  const name = unique("js-upd");
  const key = await client.createRsaKey(name, { keySize: 2048 });
  const exp = new Date(Math.floor(Date.now() / 1000) * 1000 + 3 * 86_400_000);
  const updated = await client.updateKeyProperties(name, key.properties.version, {
    enabled: false,
    expiresOn: exp,
    tags: { updated: "yes" },
    keyOps: ["verify"],
  });
  assert.equal(updated.properties.enabled, false);
  assert.equal(updated.properties.expiresOn.getTime(), exp.getTime());
  assert.deepEqual(updated.properties.tags, { updated: "yes" });
  assert.deepEqual(updated.keyOperations, ["verify"]);
  const got = await client.getKey(name);
  assert.equal(got.properties.enabled, false);
  assert.deepEqual(got.properties.tags, { updated: "yes" });
});

test("list keys and versions with paging", async () => {
  const rec = recorder();
  const client = keyClient(rec);
  const name = unique("js-pages");
  const ids = new Set();
  for (let i = 0; i < 5; i++) ids.add((await client.createEcKey(name, { curve: "P-256" })).id);
  rec.clear();
  const pages = [];
  for await (const page of client.listPropertiesOfKeyVersions(name).byPage({ maxPageSize: 2 })) pages.push(page);
  assert.ok(pages.length >= 3, `5 versions at maxPageSize 2 take >= 3 pages, got ${pages.map((p) => p.length)}`);
  assert.ok(pages.every((p) => p.length <= 2));
  const listed = pages.flat().map((p) => p.id);
  assert.deepEqual(new Set(listed), ids);
  assert.equal(listed.length, ids.size);
  const reqs = rec.find("GET", `/keys/${name}/versions`);
  assert.equal(reqs.length, pages.length);
  assert.ok(reqs[0].url.includes("maxresults=2"), reqs[0].url);
  for (const r of reqs.slice(1)) assert.ok(r.url.startsWith(`${vaultUrl}/keys/${name}/versions`), r.url);

  const prefix = unique("js-lst");
  for (let i = 0; i < 3; i++) await client.createEcKey(`${prefix}-${i}`, { curve: "P-256" });
  const keyPages = [];
  for await (const page of client.listPropertiesOfKeys().byPage({ maxPageSize: 2 })) keyPages.push(page);
  assert.ok(keyPages.length >= 2);
  const mine = keyPages.flat().filter((p) => p.name.startsWith(prefix));
  assert.deepEqual(mine.map((p) => p.name).sort(), [0, 1, 2].map((i) => `${prefix}-${i}`));
  for (const p of mine) assert.equal(p.id, `${vaultUrl}/keys/${p.name}`);

  // plain iteration (SDK default page size)
  let count = 0;
  for await (const p of client.listPropertiesOfKeyVersions(name)) {
    assert.ok(ids.has(p.id));
    count++;
  }
  assert.equal(count, 5);
});

test("delete (poller), get/list deleted, recover, purge", async () => {
  const rec = recorder();
  const client = keyClient(rec);
  const name = unique("js-del");
  const key = await client.createRsaKey(name, { keySize: 2048 });

  const poller = await client.beginDeleteKey(name, { intervalInMs: 100 });
  const deleted = await poller.pollUntilDone();
  assert.equal(deleted.properties.recoveryId, `${vaultUrl}/deletedkeys/${name}`);
  assert.ok(deleted.properties.deletedOn instanceof Date);
  assert.ok(deleted.properties.scheduledPurgeDate > deleted.properties.deletedOn);
  assert.equal(deleted.id, key.id);
  await assert.rejects(client.getKey(name), { statusCode: 404 });

  const got = await client.getDeletedKey(name);
  assert.equal(got.properties.recoveryId, deleted.properties.recoveryId);
  let found = 0;
  for await (const d of client.listDeletedKeys()) if (d.name === name) found++;
  assert.equal(found, 1);

  await assert.rejects(client.createRsaKey(name, { keySize: 2048 }), { statusCode: 409 });

  const recover = await client.beginRecoverDeletedKey(name, { intervalInMs: 100 });
  const recovered = await recover.pollUntilDone();
  assert.equal(recovered.id, key.id);
  assert.deepEqual((await client.getKey(name)).key.n, key.key.n);

  await (await client.beginDeleteKey(name, { intervalInMs: 100 })).pollUntilDone();
  rec.clear();
  await client.purgeDeletedKey(name);
  const purge = rec.find("DELETE", `/deletedkeys/${name}`);
  assert.equal(purge.length, 1);
  assert.equal(purge[0].status, 204);
  await assert.rejects(client.getDeletedKey(name), { statusCode: 404 });
  const again = await client.createEcKey(name, { curve: "P-256" });
  assert.notEqual(again.id, key.id);
});

test("backup and restore", async () => {
  const client = keyClient();
  const name = unique("js-bak");
  const key = await client.createEcKey(name, { curve: "P-256", tags: { t: "1" } });
  const blob = await client.backupKey(name);
  assert.ok(blob instanceof Uint8Array && blob.length > 64);
  await assert.rejects(client.restoreKeyBackup(blob), { statusCode: 409 });
  await (await client.beginDeleteKey(name, { intervalInMs: 100 })).pollUntilDone();
  await client.purgeDeletedKey(name);
  const restored = await client.restoreKeyBackup(blob);
  assert.equal(restored.id, key.id);
  assert.deepEqual(restored.properties.tags, { t: "1" });
});

test("rotate and rotation policy", async () => {
  const rec = recorder();
  const client = keyClient(rec);
  const name = unique("js-rot");
  const v1 = await client.createRsaKey(name, { keySize: 2048 });
  const v2 = await client.rotateKey(name);
  assert.equal(rec.find("POST", `/keys/${name}/rotate`).length, 1);
  assert.notEqual(v2.properties.version, v1.properties.version);
  assert.notDeepEqual(v2.key.n, v1.key.n);
  assert.equal((await client.getKey(name)).id, v2.id);

  const def = await client.getKeyRotationPolicy(name);
  assert.equal(def.id, `${vaultUrl}/keys/${name}/rotationpolicy`);
  const policy = await client.updateKeyRotationPolicy(name, {
    lifetimeActions: [{ action: "Rotate", timeAfterCreate: "P30D" }],
    expiresIn: "P90D",
  });
  assert.equal(policy.expiresIn, "P90D");
  const rotate = policy.lifetimeActions.filter((a) => a.action.toLowerCase() === "rotate");
  assert.equal(rotate.length, 1);
  assert.equal(rotate[0].timeAfterCreate, "P30D");
  const back = await client.getKeyRotationPolicy(name);
  assert.equal(back.expiresIn, "P90D");
  assert.equal(back.lifetimeActions.find((a) => a.action.toLowerCase() === "rotate").timeAfterCreate, "P30D");
});

test("getRandomBytes", async () => {
  const client = keyClient();
  for (const count of [1, 32, 128]) {
    const bytes = await client.getRandomBytes(count);
    assert.equal(bytes.length, count);
  }
  const a = await client.getRandomBytes(32);
  const b = await client.getRandomBytes(32);
  assert.notDeepEqual(a, b);
  await assert.rejects(client.getRandomBytes(129), (e) => {
    assert.equal(e.statusCode, 400);
    assert.equal(e.code, "BadParameter");
    return true;
  });
});

test("raw request with api%2Dversion and the challenge on a bodiless POST", async () => {
  const token = (await credential.getToken(`${vaultUrl}/.default`)).token;
  const ok = await httpsRequest(`${vaultUrl}/keys?api%2Dversion=7.6&maxresults=1`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(ok.status, 200, ok.body.toString());
  const challenge = await httpsRequest(`${vaultUrl}/keys/x/create?api%2Dversion=7.6`, { method: "POST" });
  assert.equal(challenge.status, 401);
  assert.match(challenge.headers["www-authenticate"], /^Bearer authorization="[^"]+", resource="[^"]+"$/);
});

test("SDK serviceVersion pinned to 7.5", async () => {
  const rec = recorder();
  const client = keyClient(rec, vaultUrl, { serviceVersion: "7.5" });
  const key = await client.createEcKey(unique("js-v75"), { curve: "P-256" });
  assert.equal((await client.getKey(key.name)).id, key.id);
  assert.ok(rec.log.every((e) => e.url.includes("api%2Dversion=7.5")));
});

test("second vault kv2 on its own port", { skip: !kv2Url && "KEYSHIFT_E2E_KV2_URL not set" }, async () => {
  const kv2 = keyClient(undefined, kv2Url);
  const name = unique("js-kv2");
  const key = await kv2.createEcKey(name, { curve: "P-256" });
  assertKid(key, name, kv2Url);
  await assert.rejects(keyClient().getKey(name), { statusCode: 404 });
});
