// Shared setup for the JS e2e suite: admin.json, a client-credentials TokenCredential, a wire recorder, key helpers.
import { readFileSync } from "node:fs";
import { randomUUID, createPublicKey } from "node:crypto";
import https from "node:https";
import { KeyClient, CryptographyClient } from "@azure/keyvault-keys";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the suite through tests/e2e/harness.sh`);
  return value;
}

export const admin = JSON.parse(readFileSync(env("KEYSHIFT_E2E_ADMIN"), "utf8"));
export const vaultUrl = admin.vault_url;
export const kv2Url = process.env.KEYSHIFT_E2E_KV2_URL;
const ca = readFileSync(admin.ca_cert);

/** POST/GET with the test CA; resolves { status, headers, body (Buffer) }. */
export function httpsRequest(url, { method = "GET", headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, headers, ca }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** A TokenCredential doing client_credentials against Keyshift's token endpoint, caching per scope. */
export class KeyshiftCredential {
  constructor() {
    this.cache = new Map();
    this.calls = [];
  }

  async getToken(scopes, options = {}) {
    const scope = Array.isArray(scopes) ? scopes.join(" ") : scopes;
    this.calls.push({ scope, tenantId: options.tenantId });
    const cached = this.cache.get(scope);
    if (cached && cached.expiresOnTimestamp - 60_000 > Date.now()) return cached;
    const form = new URLSearchParams({
      grant_type: "client_credentials",
      client_id: admin.client_id,
      client_secret: admin.client_secret,
      scope,
    }).toString();
    const res = await httpsRequest(admin.token_url, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "Content-Length": Buffer.byteLength(form) },
      body: form,
    });
    if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${res.body}`);
    const json = JSON.parse(res.body.toString());
    const token = { token: json.access_token, expiresOnTimestamp: Date.now() + json.expires_in * 1000 };
    this.cache.set(scope, token);
    return token;
  }
}

export const credential = new KeyshiftCredential();

/** Records every request the SDK pipeline sends (method, url, status). */
export function recorder() {
  const log = [];
  const policy = {
    name: "keyshiftE2eRecorder",
    async sendRequest(request, next) {
      const response = await next(request);
      log.push({ method: request.method, url: request.url, status: response.status });
      return response;
    },
  };
  return {
    log,
    options: { additionalPolicies: [{ policy, position: "perRetry" }] },
    clear() {
      log.length = 0;
    },
    find(method, pathSuffix) {
      return log.filter((e) => e.method === method && e.status !== 401 && new URL(e.url).pathname.endsWith(pathSuffix));
    },
  };
}

export function keyClient(rec, url = vaultUrl, extra = {}) {
  return new KeyClient(url, credential, {
    disableChallengeResourceVerification: true,
    ...(rec ? rec.options : {}),
    ...extra,
  });
}

export function cryptoClient(keyOrId, rec, extra = {}) {
  return new CryptographyClient(keyOrId, credential, {
    disableChallengeResourceVerification: true,
    ...(rec ? rec.options : {}),
    ...extra,
  });
}

export const unique = (prefix) => `${prefix}-${randomUUID().replaceAll("-", "").slice(0, 10)}`;

export const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

/** node:crypto public KeyObject from the JWK the server returned. */
export function publicKeyOf(jwk) {
  if (jwk.kty === "RSA" || jwk.kty === "RSA-HSM") {
    return createPublicKey({ format: "jwk", key: { kty: "RSA", n: b64url(jwk.n), e: b64url(jwk.e) } });
  }
  if (jwk.kty === "EC" || jwk.kty === "EC-HSM") {
    const crv = jwk.crv === "P-256K" ? "secp256k1" : jwk.crv;
    return createPublicKey({ format: "jwk", key: { kty: "EC", crv, x: b64url(jwk.x), y: b64url(jwk.y) } });
  }
  throw new Error(`no public key for ${jwk.kty}`);
}
