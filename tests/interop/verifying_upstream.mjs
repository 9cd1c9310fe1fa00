// An upstream that trusts nothing but what it checks itself, with npm jose and
// http-message-signatures: the gateway's at+jwt access tokens, WIMSE WIT + WPT (wth/ath/tth),
// WIMSE HTTP message signatures with Content-Digest, DPoP-bound tokens (RFC 9449 proof, cnf.jkt)
// and transaction tokens. Env: JWKS_URL (the gateway's JWKS), TXN_AUDIENCE, AT_JWKS_URL
// (optional: the authorization server that issued access tokens). Prints {"port": N}.
import http from "node:http";
import { createHash, webcrypto } from "node:crypto";
import * as jose from "jose";
import { httpbis } from "http-message-signatures";

const jwks = jose.createRemoteJWKSet(new URL(process.env.JWKS_URL));
const atJwks = process.env.AT_JWKS_URL ? jose.createRemoteJWKSet(new URL(process.env.AT_JWKS_URL)) : jwks;
const sha = (s) => createHash("sha256").update(s).digest("base64url");
const seenNonces = new Set();

const CURVES = { ES256: ["ECDSA", "P-256", "SHA-256"], ES384: ["ECDSA", "P-384", "SHA-384"] };

async function verifyHttpSig(req, selfUrl, body, wit) {
  const jwk = wit.cnf.jwk;
  const [name, curve, hash] = CURVES[jwk.alg] ?? [];
  const algo = name ? { name, namedCurve: curve } : { name: "Ed25519" };
  const key = await webcrypto.subtle.importKey("jwk", jwk, algo, false, ["verify"]);
  let params;
  const ok = await httpbis.verifyMessage({
    keyLookup: async (p) => {
      params = p;
      if (p.keyid || p.alg) throw new Error("keyid/alg present");
      return { verify: async (data, sig) => webcrypto.subtle.verify(
        name ? { name, hash } : { name: "Ed25519" }, key, sig, data) };
    },
    requiredFields: ["@method", "@request-target", "workload-identity-token"],
    requiredParams: ["created", "expires", "nonce", "tag"],
  }, { method: req.method, url: selfUrl + (req.url.includes("?") ? "?" + req.url.split("?")[1] : ""),
       headers: req.headers });
  if (!ok) throw new Error("httpsig");
  if (params.tag !== "wimse-workload-to-workload") throw new Error("tag");
  if (params["wimse-aud"] !== selfUrl) throw new Error("wimse-aud");
  if (seenNonces.has(params.nonce)) throw new Error("nonce replayed");
  seenNonces.add(params.nonce);
  if (body.length) {
    const want = "sha-256=:" + createHash("sha256").update(body).digest("base64") + ":";
    if (req.headers["content-digest"] !== want) throw new Error("content-digest");
  }
  return { nonce: params.nonce, body_bytes: body.length };
}

async function verifyDpop(req, selfUrl, token) {
  const { payload: at } = await jose.jwtVerify(token, atJwks, { typ: "at+jwt" });
  const { payload: p, protectedHeader } = await jose.jwtVerify(
    req.headers["dpop"], jose.EmbeddedJWK, { typ: "dpop+jwt", maxTokenAge: "60s" });
  if (p.htm !== req.method) throw new Error("htm");
  if (p.htu !== selfUrl) throw new Error("htu");
  if (p.ath !== sha(token)) throw new Error("ath");
  if (at.cnf?.jkt !== await jose.calculateJwkThumbprint(protectedHeader.jwk)) throw new Error("jkt");
  if (seenNonces.has(p.jti)) throw new Error("dpop replayed");
  seenNonces.add(p.jti);
  return { access_token: at, proof: p };
}

async function check(req, selfUrl, body) {
  const out = {};
  const h = req.headers;
  if (h["txn-token"]) {
    const { payload } = await jose.jwtVerify(h["txn-token"], jwks,
      { typ: "txntoken+jwt", audience: process.env.TXN_AUDIENCE });
    out.txn = payload;
    out.txn_raw = h["txn-token"]; // test upstream: hands it back so a test can send it on
  }
  const auth = h["authorization"];
  if (auth && auth.startsWith("Bearer ")) {
    const { payload } = await jose.jwtVerify(auth.slice(7), atJwks, { typ: "at+jwt" });
    out.access_token = payload;
  }
  if (auth && auth.startsWith("DPoP ")) {
    out.dpop = await verifyDpop(req, selfUrl, auth.slice(5));
  }
  if (h["workload-identity-token"]) {
    const wit = h["workload-identity-token"];
    const { payload: w } = await jose.jwtVerify(wit, jwks, { typ: "wit+jwt" });
    out.wit = w;
    if (h["signature-input"]) {
      out.httpsig = await verifyHttpSig(req, selfUrl, body, w);
      return out;
    }
    const key = await jose.importJWK(w.cnf.jwk, w.cnf.jwk.alg);
    const { payload: p, protectedHeader } = await jose.jwtVerify(
      h["workload-proof-token"], key, { typ: "wpt+jwt", audience: selfUrl, maxTokenAge: undefined });
    if (protectedHeader.alg !== w.cnf.jwk.alg) throw new Error("wpt alg");
    if (p.wth !== sha(wit)) throw new Error("wth");
    if (auth && p.ath !== sha(auth.split(" ")[1])) throw new Error("ath");
    if (h["txn-token"] && p.tth !== sha(h["txn-token"])) throw new Error("tth");
    if (!p.jti) throw new Error("jti");
    out.wit = w;
    out.wpt = p;
  }
  return out;
}

const server = http.createServer(async (req, res) => {
  const selfUrl = `http://127.0.0.1:${server.address().port}${req.url.split("?")[0]}`;
  try {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const verified = await check(req, selfUrl, Buffer.concat(chunks));
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify(verified));
  } catch (e) {
    res.writeHead(401, { "content-type": "application/json" });
    res.end(JSON.stringify({ error: e.code ?? String(e.message ?? e) }));
  }
});
server.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + "\n");
});
