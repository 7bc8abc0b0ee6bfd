// A real OpenID Connect provider for the end-to-end tests: the certified `oidc-provider`
// package (installed by .ci/run into a cache folder, never into the repository), on a loopback
// port of its own choosing. It prints `issuer <url>` once it listens.
//
// Environment:
//   WEFT_OIDC_PROVIDER_DIR  the folder `npm install oidc-provider` was run in
//   WEFT_OIDC_REDIRECT  the gateway's /auth/callback, the one redirect URI of client `weft`
//   WEFT_OIDC_SECRET    client `weft`'s secret
//   WEFT_OIDC_ACCOUNTS  JSON: {"<sub>": {"name": …, "agency": …, "role": …}, …}
//   WEFT_OIDC_ID_TOKEN_ALG  how ID tokens are signed: RS256 (the default) or ES256
//
// Development interactions (a login form taking any account id, then a consent form) stand in
// for the agency's own sign-in pages.
import http from 'node:http';
import crypto from 'node:crypto';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// The package lives in a cache folder (WEFT_OIDC_PROVIDER_DIR/node_modules), not beside this file.
const dir = process.env.WEFT_OIDC_PROVIDER_DIR;
const { default: Provider } = await import(
  pathToFileURL(path.join(dir, 'node_modules', 'oidc-provider', 'lib', 'index.js')).href
);

const redirect = process.env.WEFT_OIDC_REDIRECT;
const secret = process.env.WEFT_OIDC_SECRET;
const accounts = JSON.parse(process.env.WEFT_OIDC_ACCOUNTS || '{}');

// Two signing keys, both published; ID tokens are signed with the first of the algorithm asked.
function key(kind, options, alg) {
  const { privateKey } = crypto.generateKeyPairSync(kind, options);
  return { ...privateKey.export({ format: 'jwk' }), kid: `${alg}-${crypto.randomUUID()}`, alg, use: 'sig' };
}
const keys = [
  key('ec', { namedCurve: 'P-256' }, 'ES256'),
  key('rsa', { modulusLength: 2048 }, 'RS256'),
];

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: [{
      client_id: 'weft',
      client_secret: secret,
      redirect_uris: [redirect],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
      id_token_signed_response_alg: process.env.WEFT_OIDC_ID_TOKEN_ALG || 'RS256',
    }],
    jwks: { keys },
    scopes: ['openid', 'weft'],
    claims: { openid: ['sub'], weft: ['name', 'agency', 'role'] },
    // The agency and role go in the ID token itself, as the gateway reads them from there.
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    findAccount: async (ctx, id) => {
      const account = accounts[id];
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...account }) };
    },
    ttl: { IdToken: 600, AccessToken: 600, AuthorizationCode: 60 },
  });
  // Plain HTTP on loopback: the provider is told it is not behind a proxy.
  provider.proxy = false;
  server.on('request', provider.callback());
  console.log(`issuer ${issuer}`);
});
