// @azure/identity's ClientSecretCredential, unmodified, gets tokens from Keyshift's token endpoint
// (authority pointed at the server, instance discovery off) and drives @azure/keyvault-keys.
import { test } from "node:test";
import assert from "node:assert/strict";
import { ClientSecretCredential } from "@azure/identity";
import { KeyClient } from "@azure/keyvault-keys";
import { admin, vaultUrl, unique } from "./helpers.mjs";

const authorityHost = admin.token_url.split(`/${admin.tenant_id}/`)[0];

test("ClientSecretCredential from @azure/identity drives the keys SDK", async () => {
  const credential = new ClientSecretCredential(admin.tenant_id, admin.client_id, admin.client_secret, {
    authorityHost,
    disableInstanceDiscovery: true,
  });
  const token = await credential.getToken("https://vault.azure.net/.default");
  const claims = JSON.parse(Buffer.from(token.token.split(".")[1], "base64url").toString());
  assert.equal(claims.tid, admin.tenant_id);
  const client = new KeyClient(vaultUrl, credential, { disableChallengeResourceVerification: true });
  const name = unique("js-identity");
  const key = await client.createEcKey(name, { curve: "P-256" });
  assert.equal((await client.getKey(name)).id, key.id);
});

test("ClientSecretCredential with a wrong secret gets no token", async () => {
  const credential = new ClientSecretCredential(admin.tenant_id, admin.client_id, "not-the-secret", {
    authorityHost,
    disableInstanceDiscovery: true,
  });
  await assert.rejects(credential.getToken("https://vault.azure.net/.default"), /invalid_client/);
});
