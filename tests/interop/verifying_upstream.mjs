// An upstream that trusts nothing but what it checks itself, with npm jose: the gateway's
// at+jwt access tokens, WIMSE WIT + WPT (wth/ath/tth), and transaction tokens, against the
// gateway's published JWKS. Env: JWKS_URL, TXN_AUDIENCE. Prints {"port": N}.
import http from "node:http";
import { createHash } from "node:crypto";
import * as jose from "jose";

const jwks = jose.createRemoteJWKSet(new URL(process.env.JWKS_URL));
const sha = (s) => createHash("sha256").update(s).digest("base64url");

async function check(req, selfUrl) {
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
    const { payload } = await jose.jwtVerify(auth.slice(7), jwks, { typ: "at+jwt" });
    out.access_token = payload;
  }
  if (h["workload-identity-token"]) {
    const wit = h["workload-identity-token"];
    const { payload: w } = await jose.jwtVerify(wit, jwks, { typ: "wit+jwt" });
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
    const verified = await check(req, selfUrl);
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
