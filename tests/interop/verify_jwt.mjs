// Verifies a JWT with npm jose against a remote JWKS, or a JWKS snapshot saved earlier
// ("file:/path"). Args: jwks token audience issuer [typ] [verify-at, epoch seconds]
// Prints the payload as JSON, or the error and exit code 1.
import { readFileSync } from "node:fs";
import * as jose from "jose";

const [jwksUrl, token, audience, issuer, typ, at] = process.argv.slice(2);
const keys = jwksUrl.startsWith("file:")
  ? jose.createLocalJWKSet(JSON.parse(readFileSync(jwksUrl.slice(5), "utf8")))
  : jose.createRemoteJWKSet(new URL(jwksUrl));
try {
  const { payload, protectedHeader } = await jose.jwtVerify(
    token, keys,
    { audience, issuer, ...(typ ? { typ } : {}),
      ...(at ? { currentDate: new Date(Number(at) * 1000) } : {}) });
  process.stdout.write(JSON.stringify({ payload, header: protectedHeader }));
} catch (e) {
  process.stdout.write(JSON.stringify({ error: e.code ?? String(e) }));
  process.exit(1);
}
