// An RFC 8693 token service built on @jmondi/oauth2-server (TokenExchangeGrant), for interop
// tests. Subject tokens are checked with jose against the JWKS file named by SUBJECT_JWKS; issued
// access tokens are ES256 JWTs whose public key is served at /jwks. Prints {"port": N}.
import { readFileSync } from "node:fs";
import express from "express";
import * as jose from "jose";
import { AuthorizationServer, DateInterval, OAuthException } from "@jmondi/oauth2-server";
import { handleExpressError, handleExpressResponse, requestFromExpress }
  from "@jmondi/oauth2-server/express";

const subjectKeys = jose.createLocalJWKSet(JSON.parse(readFileSync(process.env.SUBJECT_JWKS, "utf8")));
const { publicKey, privateKey } = await jose.generateKeyPair("ES256", { extractable: true });
const publicJwk = { ...(await jose.exportJWK(publicKey)), kid: "rfc8693-sts", alg: "ES256", use: "sig" };

const scopes = [{ name: "read" }, { name: "orders.read" }];
const client = {
  id: "gateway", name: "gateway", secret: process.env.CLIENT_SECRET ?? "s3cret",
  redirectUris: [], allowedGrants: ["urn:ietf:params:oauth:grant-type:token-exchange"], scopes,
};
const clientRepository = {
  async getByIdentifier(id) { if (id !== client.id) throw OAuthException.invalidClient(); return client; },
  async isClientValid(grantType, c, secret) { return c.secret === secret && c.allowedGrants.includes(grantType); },
};
const tokenRepository = {
  async issueToken(c, s, user) {
    return { accessToken: "", accessTokenExpiresAt: new DateInterval("1h").getEndDate(), client: c, user, scopes: s };
  },
  async issueRefreshToken(t) { return t; },
  async persist() {},
  async revoke() {},
  async isRefreshTokenRevoked() { return false; },
  async getByRefreshToken() { throw OAuthException.invalidGrant(); },
};
const scopeRepository = {
  async getAllByIdentifiers(names) { return scopes.filter((s) => names.includes(s.name)); },
  async finalize(s) { return s; },
};
// ES256 instead of the library's default HS256, so upstreams can verify with a JWKS.
const jwt = {
  async sign(payload) {
    return new jose.SignJWT(payload).setProtectedHeader({ alg: "ES256", kid: "rfc8693-sts", typ: "at+jwt" }).sign(privateKey);
  },
  async verify(token) { return (await jose.jwtVerify(token, publicKey)).payload; },
  decode(token) { return jose.decodeJwt(token); },
};

const server = new AuthorizationServer(clientRepository, tokenRepository, scopeRepository, jwt,
  { requiresS256: true, issuer: "rfc8693-sts" });
let exchanges = 0;
server.enableGrantType({
  grant: "urn:ietf:params:oauth:grant-type:token-exchange",
  async processTokenExchange({ subjectToken }) {
    exchanges += 1;
    try {
      const { payload } = await jose.jwtVerify(subjectToken, subjectKeys);
      return { id: payload.sub };
    } catch (e) {
      throw OAuthException.invalidGrant("subject token refused");
    }
  },
});

const app = express();
app.use(express.urlencoded({ extended: false }));
app.post("/token", async (req, res) => {
  try {
    handleExpressResponse(res, await server.respondToAccessTokenRequest(requestFromExpress(req)));
  } catch (e) {
    handleExpressError(e, res);
  }
});
app.get("/jwks", (req, res) => res.json({ keys: [publicJwk] }));
app.get("/stats", (req, res) => res.json({ exchanges }));
const listener = app.listen(0, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: listener.address().port }) + "\n");
});
