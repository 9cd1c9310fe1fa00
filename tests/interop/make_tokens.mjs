// Makes credentials with libraries we did not write (jose, dpop) for the interop tests.
// Input (stdin, JSON): {"target": "<URL the proofs name>", "count": N, "sub": "<SPIFFE ID>",
//                       "issuer": "<AS iss>", "audience": "<access token aud>", "svid_aud": "..."}
// Output (stdout, JSON): public keys to configure, and per-request header sets.
import * as jose from "jose";
import * as DPoP from "dpop";
import { httpbis } from "http-message-signatures";

const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (c) => (data += c));
  process.stdin.on("end", () => resolve(data));
}));
const now = Math.floor(Date.now() / 1000);

// Trust domain key (signs WITs and JWT-SVIDs) and the AS key (signs DPoP-bound access tokens).
const td = await jose.generateKeyPair("ES256", { extractable: true });
const tdJwk = { ...(await jose.exportJWK(td.publicKey)), kid: "td-1", alg: "ES256", use: "sig" };
const as = await jose.generateKeyPair("ES256", { extractable: true });
const asJwk = { ...(await jose.exportJWK(as.publicKey)), kid: "as-1", alg: "ES256", use: "sig" };

const sha = async (s) => jose.base64url.encode(
  new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(s))));

// WIT with an Ed25519 workload key (WIMSE's example algorithm), then one WPT per request.
const wl = await jose.generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
const wlJwk = { ...(await jose.exportJWK(wl.publicKey)), alg: "EdDSA" };
const wit = await new jose.SignJWT({ cnf: { jwk: wlJwk } })
  .setProtectedHeader({ alg: "ES256", kid: "td-1", typ: "wit+jwt" })
  .setSubject(input.sub).setIssuedAt(now).setExpirationTime(now + 600).sign(td.privateKey);
const witRequests = [];
for (let i = 0; i < input.count; i++) {
  const wpt = await new jose.SignJWT({ wth: await sha(wit) })
    .setProtectedHeader({ alg: "EdDSA", typ: "wpt+jwt" })
    .setAudience(input.target).setJti(crypto.randomUUID())
    .setExpirationTime(now + 120).sign(wl.privateKey);
  witRequests.push({ "Workload-Identity-Token": wit, "Workload-Proof-Token": wpt });
}

// WIMSE HTTP message signatures (RFC 9421) by the http-message-signatures package, with the
// WIT's key, over a body covered by Content-Digest (RFC 9530).
const body = input.body ?? '{"order": 42}';
const digest = Buffer.from(await crypto.subtle.digest("SHA-256", Buffer.from(body))).toString("base64");
const sigRequests = [];
for (let i = 0; i < input.count; i++) {
  const req = {
    method: "POST",
    url: input.target,
    headers: {
      "Workload-Identity-Token": wit,
      "Content-Type": "application/json",
      "Content-Digest": `sha-256=:${digest}:`,
    },
  };
  const signed = await httpbis.signMessage({
    key: { sign: async (data) => Buffer.from(await crypto.subtle.sign("Ed25519", wl.privateKey, data)) },
    name: "wimse",
    fields: ["@method", "@request-target", "workload-identity-token", "content-type", "content-digest"],
    params: ["created", "expires", "nonce", "tag", "wimse-aud"],
    paramValues: { nonce: crypto.randomUUID(), tag: "wimse-workload-to-workload", "wimse-aud": input.target },
  }, req);
  sigRequests.push(signed.headers);
}

// DPoP: a key pair from the dpop package, an access token bound to it, one proof per request.
const dk = await DPoP.generateKeyPair("ES256");
const jkt = await jose.calculateJwkThumbprint(await jose.exportJWK(dk.publicKey));
const at = await new jose.SignJWT({ cnf: { jkt }, client_id: "interop" })
  .setProtectedHeader({ alg: "ES256", kid: "as-1", typ: "at+jwt" })
  .setIssuer(input.issuer).setSubject(input.sub).setAudience(input.audience)
  .setIssuedAt(now).setExpirationTime(now + 300).sign(as.privateKey);
const dpopRequests = [];
for (let i = 0; i < input.count; i++) {
  const proof = await DPoP.generateProof(dk, input.target, "GET", undefined, at);
  dpopRequests.push({ Authorization: `DPoP ${at}`, DPoP: proof });
}

// A JWT-SVID as a bearer token.
const svid = await new jose.SignJWT({})
  .setProtectedHeader({ alg: "ES256", kid: "td-1", typ: "JWT" })
  .setSubject(input.sub).setAudience(input.svid_aud)
  .setIssuedAt(now).setExpirationTime(now + 300).sign(td.privateKey);

process.stdout.write(JSON.stringify({
  trust_domain_jwks: { keys: [tdJwk] },
  issuer_jwks: { keys: [asJwk] },
  wit: witRequests,
  dpop: dpopRequests,
  httpsig: sigRequests,
  httpsig_body: body,
  bearer: { Authorization: `Bearer ${svid}` },
  dpop_jkt: jkt,
}));
