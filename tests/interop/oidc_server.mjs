// panva's oidc-provider as an OAuth server for client_credentials with RFC 7523 private_key_jwt
// client authentication, for interop tests. Input (env): CLIENTS = JSON list of
// {client_id, jwks}; RESOURCE = the resource indicator it serves. Prints {"port": N}.
import http from "node:http";
import * as jose from "jose";
import Provider from "oidc-provider";

const clients = JSON.parse(process.env.CLIENTS).map(({ client_id, jwks }) => ({
  client_id,
  token_endpoint_auth_method: "private_key_jwt",
  token_endpoint_auth_signing_alg: "ES256",
  id_token_signed_response_alg: "ES256",
  grant_types: ["client_credentials"],
  response_types: [],
  redirect_uris: [],
  jwks,
}));
const resource = process.env.RESOURCE;
const { privateKey } = await jose.generateKeyPair("ES256", { extractable: true });
const signing = { ...(await jose.exportJWK(privateKey)), kid: "oidc-1", alg: "ES256", use: "sig" };

const server = http.createServer();
server.listen(0, "127.0.0.1", () => {
  const { port } = server.address();
  const provider = new Provider(`http://127.0.0.1:${port}`, {
    clients,
    jwks: { keys: [signing] },
    features: {
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => resource,
        getResourceServerInfo: () => ({
          scope: "orders.read",
          accessTokenFormat: "jwt",
          accessTokenTTL: 600,
          jwt: { sign: { alg: "ES256" } },
        }),
        useGrantedResource: () => true,
      },
    },
  });
  provider.proxy = false;
  server.on("request", provider.callback());
  process.stdout.write(JSON.stringify({ port }) + "\n");
});
