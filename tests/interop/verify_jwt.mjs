// Verifies a JWT with npm jose against a remote JWKS. Args: jwks_url token audience issuer [typ]
// Prints the payload as JSON, or the error and exit code 1.
import * as jose from "jose";

const [jwksUrl, token, audience, issuer, typ] = process.argv.slice(2);
try {
  const { payload, protectedHeader } = await jose.jwtVerify(
    token, jose.createRemoteJWKSet(new URL(jwksUrl)),
    { audience, issuer, ...(typ ? { typ } : {}) });
  process.stdout.write(JSON.stringify({ payload, header: protectedHeader }));
} catch (e) {
  process.stdout.write(JSON.stringify({ error: e.code ?? String(e) }));
  process.exit(1);
}
