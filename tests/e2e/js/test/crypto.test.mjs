// CryptographyClient (@azure/keyvault-keys) against Keyshift, cross-checked with node:crypto.
import { before, test } from "node:test";
import assert from "node:assert/strict";
import {
  constants,
  createCipheriv,
  createDecipheriv,
  createHash,
  publicEncrypt,
  randomBytes,
  verify as nodeVerify,
} from "node:crypto";
import { cryptoClient, keyClient, publicKeyOf, recorder, unique, vaultUrl } from "./helpers.mjs";

const sha = (bits, data) => createHash(`sha${bits}`).update(data).digest();

let rsa, ec256, oct;
before(async () => {
  const client = keyClient();
  rsa = await client.createRsaKey(unique("js-crsa"), { keySize: 2048 });
  ec256 = await client.createEcKey(unique("js-cec"), { curve: "P-256" });
  oct = await client.createOctKey(unique("js-coct"), { keySize: 256, hsm: true });
});

test("RSA-OAEP-256 encrypt/decrypt (remote) and local publicEncrypt -> remote decrypt", async () => {
  const rec = recorder();
  const client = cryptoClient(rsa.id, rec);
  const plaintext = Buffer.from("hello from the JS SDK");
  const enc = await client.encrypt({ algorithm: "RSA-OAEP-256", plaintext });
  assert.equal(rec.find("POST", `/${rsa.properties.version}/encrypt`).length, 1, JSON.stringify(rec.log));
  assert.equal(enc.result.length, 256);
  assert.equal(enc.keyID, rsa.id);
  const dec = await client.decrypt({ algorithm: "RSA-OAEP-256", ciphertext: enc.result });
  assert.deepEqual(Buffer.from(dec.result), plaintext);

  const local = publicEncrypt(
    { key: publicKeyOf(rsa.key), padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: "sha256" },
    plaintext,
  );
  const dec2 = await client.decrypt("RSA-OAEP-256", local);
  assert.deepEqual(Buffer.from(dec2.result), plaintext);
  assert.equal(rec.find("POST", `/${rsa.properties.version}/decrypt`).length, 2);
});

test("RSA-OAEP: the SDK encrypts locally, the server decrypts", async () => {
  const client = cryptoClient(rsa);
  const enc = await client.encrypt("RSA-OAEP", Buffer.from("local"));
  const dec = await client.decrypt("RSA-OAEP", enc.result);
  assert.equal(Buffer.from(dec.result).toString(), "local");
});

test("unversioned key id: /keys/{name}//encrypt and //decrypt use the latest version", async () => {
  const rec = recorder();
  const client = cryptoClient(`${vaultUrl}/keys/${rsa.name}`, rec);
  const enc = await client.encrypt("RSA-OAEP-256", Buffer.from("latest"));
  const dec = await client.decrypt("RSA-OAEP-256", enc.result);
  assert.equal(Buffer.from(dec.result).toString(), "latest");
  const paths = rec.log.filter((e) => e.status !== 401).map((e) => new URL(e.url).pathname);
  // the SDK first GETs /keys/{name}/, then sends the operations with an empty version segment
  assert.ok(paths.includes(`/keys/${rsa.name}/`), paths.join(" "));
  assert.ok(paths.includes(`/keys/${rsa.name}//encrypt`), paths.join(" "));
  assert.ok(paths.includes(`/keys/${rsa.name}//decrypt`), paths.join(" "));
  const signed = await client.sign("RS256", sha(256, Buffer.from("latest")));
  assert.equal(signed.keyID, rsa.id, "the server reports the versioned kid it used");
  const wrapped = await client.wrapKey("RSA-OAEP-256", Buffer.alloc(32, 7));
  assert.deepEqual(Buffer.from((await client.unwrapKey("RSA-OAEP-256", wrapped.result)).result), Buffer.alloc(32, 7));
  assert.equal(rec.find("POST", `/keys/${rsa.name}//wrapkey`).length, 1);
  assert.equal(rec.find("POST", `/keys/${rsa.name}//unwrapkey`).length, 1);
  assert.equal(rec.find("POST", `/keys/${rsa.name}//sign`).length, 1);
});

test("A256GCM encrypt/decrypt on oct-HSM (server-generated iv and tag)", async () => {
  const rec = recorder();
  const client = cryptoClient(oct.id, rec);
  const plaintext = Buffer.from("GCM via the JS SDK");
  const aad = Buffer.from("aad");
  const enc = await client.encrypt({ algorithm: "A256GCM", plaintext, additionalAuthenticatedData: aad });
  assert.equal(rec.find("POST", "/encrypt").length, 1);
  assert.equal(enc.iv.length, 12);
  assert.equal(enc.authenticationTag.length, 16);
  assert.equal(enc.result.length, plaintext.length);
  const dec = await client.decrypt({
    algorithm: "A256GCM",
    ciphertext: enc.result,
    iv: enc.iv,
    authenticationTag: enc.authenticationTag,
    additionalAuthenticatedData: aad,
  });
  assert.deepEqual(Buffer.from(dec.result), plaintext);
  await assert.rejects(
    client.decrypt({ algorithm: "A256GCM", ciphertext: enc.result, iv: enc.iv, authenticationTag: Buffer.alloc(16) }),
    { statusCode: 400 },
  );
});

test("A256KW wrap/unwrap on oct-HSM", async () => {
  const rec = recorder();
  const client = cryptoClient(oct.id, rec);
  const cek = randomBytes(32);
  const wrapped = await client.wrapKey("A256KW", cek);
  assert.equal(wrapped.result.length, 40);
  const unwrapped = await client.unwrapKey("A256KW", wrapped.result);
  assert.deepEqual(Buffer.from(unwrapped.result), cek);
  assert.equal(rec.find("POST", "/wrapkey").length, 1);
  assert.equal(rec.find("POST", "/unwrapkey").length, 1);
});

test("imported AES key: GCM and KW cross-checked with node:crypto", async () => {
  const k = randomBytes(32);
  const key = await keyClient().importKey(unique("js-imp"), {
    kty: "oct-HSM",
    k,
    keyOps: ["encrypt", "decrypt", "wrapKey", "unwrapKey"],
  });
  assert.equal(key.key.k, undefined);
  // keep the SDK from using its local AES provider: give it the id only (the server returns no k)
  const client = cryptoClient(key.id);
  const plaintext = Buffer.from("cross-checked");
  const enc = await client.encrypt({ algorithm: "A256GCM", plaintext });
  const d = createDecipheriv("aes-256-gcm", k, enc.iv);
  d.setAuthTag(Buffer.from(enc.authenticationTag));
  assert.deepEqual(Buffer.concat([d.update(enc.result), d.final()]), plaintext);

  const iv = randomBytes(12);
  const c = createCipheriv("aes-256-gcm", k, iv);
  const ct = Buffer.concat([c.update(plaintext), c.final()]);
  const dec = await client.decrypt({ algorithm: "A256GCM", ciphertext: ct, iv, authenticationTag: c.getAuthTag() });
  assert.deepEqual(Buffer.from(dec.result), plaintext);

  const cek = randomBytes(16);
  const wrapped = await client.wrapKey("A256KW", cek);
  const kw = createDecipheriv("id-aes256-wrap", k, Buffer.from("A6A6A6A6A6A6A6A6", "hex"));
  assert.deepEqual(Buffer.concat([kw.update(wrapped.result), kw.final()]), cek);
});

test("ES256 sign (raw r||s) verified with node:crypto, and remote verify", async () => {
  const rec = recorder();
  const client = cryptoClient(ec256.id, rec);
  const data = Buffer.from("sign me");
  const digest = sha(256, data);
  const signed = await client.sign("ES256", digest);
  assert.equal(signed.result.length, 64, "ECDSA P-256 signature is 64 raw bytes");
  assert.ok(nodeVerify("sha256", data, { key: publicKeyOf(ec256.key), dsaEncoding: "ieee-p1363" }, signed.result));
  const ok = await client.verify("ES256", digest, signed.result);
  assert.equal(ok.result, true);
  const bad = Buffer.from(signed.result);
  bad[5] ^= 1;
  assert.equal((await client.verify("ES256", digest, bad)).result, false);
  assert.equal(rec.find("POST", "/sign").length, 1);
  assert.equal(rec.find("POST", "/verify").length, 2);
  // signData hashes client-side and signs remotely
  const sd = await client.signData("ES256", data);
  assert.ok(nodeVerify("sha256", data, { key: publicKeyOf(ec256.key), dsaEncoding: "ieee-p1363" }, sd.result));
});

test("PS256 sign verified with node:crypto (salt = digest length), and remote verify", async () => {
  const client = cryptoClient(rsa.id);
  const data = Buffer.from("pss data");
  const digest = sha(256, data);
  const signed = await client.sign("PS256", digest);
  assert.equal(signed.result.length, 256);
  assert.ok(
    nodeVerify(
      "sha256",
      data,
      { key: publicKeyOf(rsa.key), padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 },
      signed.result,
    ),
  );
  assert.equal((await client.verify("PS256", digest, signed.result)).result, true);
  assert.equal((await client.verify("PS256", sha(256, Buffer.from("x")), signed.result)).result, false);
  // verifyData with RS256 runs locally in the SDK against the server's public key
  const rs = await client.signData("RS256", data);
  assert.equal((await client.verifyData("RS256", data, rs.result)).result, true);
});

test("KeyClient.getCryptographyClient with and without version", async () => {
  const client = keyClient();
  const name = unique("js-gcc");
  const v1 = await client.createEcKey(name, { curve: "P-256" });
  const v2 = await client.rotateKey(name);
  const data = Buffer.from("versions");
  const digest = sha(256, data);
  const latest = await client.getCryptographyClient(name).sign("ES256", digest);
  assert.ok(nodeVerify("sha256", data, { key: publicKeyOf(v2.key), dsaEncoding: "ieee-p1363" }, latest.result));
  const old = await client.getCryptographyClient(name, { keyVersion: v1.properties.version }).sign("ES256", digest);
  assert.equal(old.keyID, v1.id);
  assert.ok(nodeVerify("sha256", data, { key: publicKeyOf(v1.key), dsaEncoding: "ieee-p1363" }, old.result));
});

test("disabled key and forbidden key_ops give 403", async () => {
  const client = keyClient();
  const key = await client.createEcKey(unique("js-403"), { curve: "P-256", keyOps: ["verify"] });
  const crypto = cryptoClient(key.id);
  await assert.rejects(crypto.sign("ES256", sha(256, Buffer.from("x"))), (e) => {
    // the SDK may refuse locally (it checks key_ops of the downloaded key) or the server answers 403
    assert.ok(e.statusCode === 403 || /not permitted|not supported|Operation/i.test(e.message), String(e));
    return true;
  });
  const remoteOnly = cryptoClient(key.id);
  remoteOnly.key = { kind: "remoteOnlyIdentifier", value: key.id }; // SDK internals: skip the key download
  await assert.rejects(remoteOnly.sign("ES256", sha(256, Buffer.from("x"))), { statusCode: 403 });

  const dis = await client.createEcKey(unique("js-dis"), { curve: "P-256", enabled: false });
  const disClient = cryptoClient(dis.id);
  disClient.key = { kind: "remoteOnlyIdentifier", value: dis.id };
  await assert.rejects(disClient.sign("ES256", sha(256, Buffer.from("x"))), { statusCode: 403 });
});
