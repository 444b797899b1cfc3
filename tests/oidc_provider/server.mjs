// A certified OpenID provider (panva/oidc-provider) configured for Narrowgate's tests.
//
//   node server.mjs <port> [--plain]
//
// Issuer http://127.0.0.1:<port>. Dynamic client registration (open); authorization code with PKCE S256
// only; RFC 8707 resource indicators: the access token is an RS256 JWT (typ at+jwt) whose `aud` is the
// requested resource, carrying the person's email, email_verified, groups, acr, amr and auth_time.
// max_age, prompt=login and acr_values make a signed-in person authenticate again.
//
// --plain: a provider as stingy as real ones can be: access tokens carry only the RFC 9068 claims (no email,
// groups, acr, amr or auth_time), and acr_values is only what oidc-provider itself makes of it (no added check).
//
// Static clients beside dynamic registration (secret = `<id>-secret`, client_secret_post):
//   narrowgate-machine   client credentials only (no person): with `resource`, an access token for it (sub = client)
//   narrowgate-app       authorization code, like a registered client (its ID token's aud is this id)
//   narrowgate-two-apis  authorization code; its access tokens name OTHER_API as well as the requested resource
//
// Login and consent are automated without a browser (tests/support/oidc_provider.py drives them):
//   GET  /interaction/<uid>          -> JSON {uid, prompt, reasons, params}
//   POST /interaction/<uid>/login    form user=<alice|bob>&acr=<pwd|mfa>   -> 303 back to the authorization
//   POST /interaction/<uid>/consent  grants what the client asked for     -> 303 back to the authorization
// Keys are made at start; nothing is stored on disk (in-memory adapter).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider, { errors, interactionPolicy } from 'oidc-provider';

const ACCESS_TOKEN_TTL_S = 300;
const RESOURCE_SCOPE = 'mcp';
const PLAIN = process.argv.includes('--plain');
const OTHER_API = 'https://other-api.example/';
const ACR_AMR = { pwd: ['pwd'], mfa: ['pwd', 'otp'] };
const PEOPLE = {
  alice: { email: 'alice@example.com', email_verified: true, groups: ['support'] },
  bob: { email: 'bob@example.com', email_verified: false, groups: [] },
};

function signingKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { ...privateKey.export({ format: 'jwk' }), kid: `rs256-${randomBytes(6).toString('hex')}`, alg: 'RS256', use: 'sig' };
}

async function findAccount(ctx, sub) {
  const person = PEOPLE[sub];
  if (!person) return undefined;
  return { accountId: sub, claims: async () => ({ sub, ...person }) };
}

// The OIDC login prompt asks again when the person's current acr is not one the client asked for in acr_values
// (the built-in checks only honour essential acr claims); a fresh login answers it whatever acr it gave.
function loginPolicy() {
  const policy = interactionPolicy.base();
  policy.get('login').checks.add(new interactionPolicy.Check(
    'acr_values', 'a requested authentication context class is not met',
    (ctx) => {
      const wanted = ctx.oidc.params.acr_values?.split(' ').filter(Boolean) ?? [];
      if (!wanted.length || ctx.oidc.result?.login || wanted.includes(ctx.oidc.acr)) {
        return interactionPolicy.Check.NO_NEED_TO_PROMPT;
      }
      return interactionPolicy.Check.REQUEST_PROMPT;
    },
  ));
  return policy;
}

// The person's claims and how they authenticated go into the access token (the resource server reads them).
async function extraTokenClaims(ctx, token) {
  if (!token.accountId) return undefined;
  const { AuthorizationCode: code, RefreshToken: refresh } = ctx.oidc.entities;
  const source = code ?? refresh;
  const person = PEOPLE[token.accountId] ?? {};
  return {
    email: person.email,
    email_verified: person.email_verified,
    groups: person.groups,
    acr: source?.acr,
    amr: source?.amr,
    auth_time: source?.authTime,
  };
}

const NATIVE = { application_type: 'native', token_endpoint_auth_method: 'client_secret_post' };
const STATIC_CLIENTS = [
  { ...NATIVE, client_id: 'narrowgate-machine', grant_types: ['client_credentials'], response_types: [],
    redirect_uris: [] },
  ...['narrowgate-app', 'narrowgate-two-apis'].map((id) => ({
    ...NATIVE, client_id: id, grant_types: ['authorization_code'], response_types: ['code'],
    redirect_uris: ['http://127.0.0.1:9/callback'] })),
].map((client) => ({ ...client, client_secret: `${client.client_id}-secret` }));

// A resource server's audience is one string here; a token that names two APIs (as Auth0's with scope openid and
// Keycloak's with its `account` audience do) is made by the documented JWT customizer hook.
function twoAudiences(ctx, token, jwt) {
  if (token.clientId === 'narrowgate-two-apis') jwt.payload.aud = [OTHER_API, jwt.payload.aud];
}

function configuration() {
  return {
    clients: STATIC_CLIENTS,
    jwks: { keys: [signingKey()] },
    cookies: { keys: [randomBytes(32).toString('hex')] },
    findAccount,
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'groups'],
    acrValues: Object.keys(ACR_AMR),
    responseTypes: ['code'],
    pkce: { required: () => true },
    clientDefaults: { grant_types: ['authorization_code'], response_types: ['code'] },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: (ctx, client, oneOf) => oneOf ?? undefined,
        useGrantedResource: () => true,
        getResourceServerInfo: (ctx, resource) => {
          if (!/^https?:\/\//.test(resource)) throw new errors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPE,
            audience: resource,
            accessTokenTTL: ACCESS_TOKEN_TTL_S,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    formats: { customizers: { jwt: twoAudiences } },
    ...(PLAIN ? {} : { extraTokenClaims }),
    interactions: { policy: PLAIN ? interactionPolicy.base() : loginPolicy(), url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { AccessToken: ACCESS_TOKEN_TTL_S, Session: 3600, Interaction: 600, Grant: 3600, AuthorizationCode: 60 },
  };
}

async function formBody(req) {
  let text = '';
  for await (const chunk of req) text += chunk;
  return new URLSearchParams(text);
}

async function showInteraction(provider, ctx) {
  const { uid, prompt, params } = await provider.interactionDetails(ctx.req, ctx.res);
  ctx.body = { uid, prompt: prompt.name, reasons: prompt.reasons, params };
}

async function login(provider, ctx) {
  const { prompt } = await provider.interactionDetails(ctx.req, ctx.res);
  const form = await formBody(ctx.req);
  const user = form.get('user');
  const acr = form.get('acr') ?? 'pwd';
  if (prompt.name !== 'login' || !PEOPLE[user] || !ACR_AMR[acr]) {
    ctx.status = 400;
    ctx.body = { error: 'invalid_login', error_description: 'not a login prompt, or an unknown user or acr' };
    return;
  }
  const result = { login: { accountId: user, acr, amr: ACR_AMR[acr], remember: true } };
  await finish(provider, ctx, result);
}

async function consent(provider, ctx) {
  const { prompt, params, session, grantId } = await provider.interactionDetails(ctx.req, ctx.res);
  if (prompt.name !== 'consent') {
    ctx.status = 400;
    ctx.body = { error: 'invalid_consent', error_description: 'not a consent prompt' };
    return;
  }
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
  if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
  if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  await finish(provider, ctx, { consent: { grantId: await grant.save() } });
}

async function finish(provider, ctx, result) {
  const returnTo = await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: true });
  ctx.status = 303;
  ctx.set('Location', returnTo);
  ctx.body = '';
}

const INTERACTION = /^\/interaction\/([\w-]+)(?:\/(login|consent))?$/;

function interactionRoutes(provider) {
  return async (ctx, next) => {
    const match = INTERACTION.exec(ctx.path);
    if (!match) return next();
    const [, , action] = match;
    try {
      if (!action && ctx.method === 'GET') return await showInteraction(provider, ctx);
      if (action === 'login' && ctx.method === 'POST') return await login(provider, ctx);
      if (action === 'consent' && ctx.method === 'POST') return await consent(provider, ctx);
      ctx.status = 405;
      ctx.body = { error: 'method_not_allowed' };
    } catch (err) {
      ctx.status = err.statusCode ?? 500;
      ctx.body = { error: err.error ?? 'server_error', error_description: err.error_description ?? err.message };
    }
    return undefined;
  };
}

function main() {
  const port = Number.parseInt(process.argv[2] ?? '', 10);
  if (!Number.isInteger(port) || port <= 0) {
    console.error('usage: node server.mjs <port>');
    process.exit(2);
  }
  const provider = new Provider(`http://127.0.0.1:${port}`, configuration());
  provider.use(interactionRoutes(provider));
  const server = provider.listen(port, '127.0.0.1', () => console.error(`oidc-provider: ${provider.issuer}`));
  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main();
