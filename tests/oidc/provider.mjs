// A real OpenID Connect provider for the tests: node-oidc-provider (OpenID Certified) with a
// login page of test accounts, the authorization-code flow with PKCE, a `roles` claim, RS256
// ID tokens with a JWKS, and RP-initiated logout.
//
// Configured by environment variables:
//   OIDC_PORT                  port on 127.0.0.1 (the issuer is http://127.0.0.1:<port>)
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET
//   OIDC_REDIRECT_URIS         space-separated callback URLs of the relying party
//   OIDC_POST_LOGOUT_URIS      space-separated URLs the provider may send people to after sign-out
//   OIDC_CONTROL_FILE          JSON re-read at every use, so a test can change it between sign-ins:
//     {"accounts": {"<login>": {"password": "...", "sub": "...", "roles": [...], ...}},
//      "forge": null | "unsigned" | "other-key" | "issuer" | "audience" | "nonce" | "expired"}
//   "forge" makes the token endpoint hand out a bad ID token of that kind, to test the relying
//   party's checks against a real flow.
import { createServer } from 'node:http';
import { generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.OIDC_CLIENT_ID || 'gateway-admin';
const words = (name) => (process.env[name] || '').split(/\s+/).filter(Boolean);

const control = () => JSON.parse(readFileSync(process.env.OIDC_CONTROL_FILE, 'utf8'));
const accountByLogin = (login) => control().accounts[login];
const accountBySub = (sub) => Object.values(control().accounts).find((account) => account.sub === sub);

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test-key-1', alg: 'RS256', use: 'sig' };

const page = (title, body) => `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:sans-serif;max-width:28em;margin:3em auto;color:#222}
label{display:block;margin-top:1em}input{font-size:1em;padding:.3em;width:100%}
button{margin-top:1.5em;font-size:1em;padding:.5em 1em;background:#1d4ed8;color:#fff;border:0}
.error{color:#b91c1c}</style></head>
<body><main><h1>${title}</h1>${body}</main></body></html>`;
const escape = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const oidc = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: process.env.OIDC_CLIENT_SECRET,
    redirect_uris: words('OIDC_REDIRECT_URIS'),
    post_logout_redirect_uris: words('OIDC_POST_LOGOUT_URIS'),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
    id_token_signed_response_alg: 'RS256',
  }],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'roles'],
  },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: {
      enabled: true,
      logoutSource: async (ctx, form) => {
        ctx.body = page('Sign out', `${form}<p>Sign out of the test provider?</p>
          <button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
      },
      postLogoutSuccessSource: async (ctx) => { ctx.body = page('Signed out', '<p>You are signed out.</p>'); },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', `<p class="error">${escape(out.error)}: ${escape(out.error_description || '')}</p>`);
  },
  findAccount: async (ctx, sub) => {
    const account = accountBySub(sub);
    if (!account) return undefined;
    return {
      accountId: sub,
      // Re-read at every use: a role changed between sign-ins shows in the next userinfo.
      claims: async () => {
        const current = accountBySub(sub) || {};
        return {
          sub,
          email: current.email,
          email_verified: true,
          name: current.name,
          preferred_username: current.preferred_username,
          roles: current.roles || [],
        };
      },
    };
  },
  // A first-party client: every scope it asks for is granted without a consent page.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope(ctx.oidc.requestParamScopes ? [...ctx.oidc.requestParamScopes].join(' ') : 'openid');
    await grant.save();
    return grant;
  },
  ttl: { Session: 3600, Grant: 3600, Interaction: 600, AuthorizationCode: 60, AccessToken: 600, IdToken: 600 },
});

// --- forged ID tokens, on request of the control file -------------------------------------------
const b64 = (data) => Buffer.from(data).toString('base64url');
const signRS256 = (header, payload, key) => {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(payload))}`;
  return `${input}.${sign('sha256', Buffer.from(input), key).toString('base64url')}`;
};
const forge = (idToken, kind) => {
  const payload = JSON.parse(Buffer.from(idToken.split('.')[1], 'base64url').toString());
  const header = { alg: 'RS256', typ: 'JWT', kid: signingJwk.kid };
  switch (kind) {
    case 'unsigned':
      return `${b64(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64(JSON.stringify(payload))}.`;
    case 'other-key':
      return signRS256(header, payload, generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
    case 'issuer':
      return signRS256(header, { ...payload, iss: 'http://issuer.invalid' }, privateKey);
    case 'audience':
      return signRS256(header, { ...payload, aud: 'another-client' }, privateKey);
    case 'nonce':
      return signRS256(header, { ...payload, nonce: 'not-the-nonce-sent' }, privateKey);
    case 'expired':
      return signRS256(header, { ...payload, iat: payload.iat - 7200, exp: payload.iat - 3600 }, privateKey);
    default:
      throw new Error(`unknown forgery ${kind}`);
  }
};
oidc.use(async (ctx, next) => {
  await next();
  const kind = control().forge;
  if (kind && ctx.path === '/token' && ctx.body?.id_token) {
    ctx.body = { ...ctx.body, id_token: forge(ctx.body.id_token, kind) };
  }
});

// --- the login page ---------------------------------------------------------------------------
const readForm = (req) => new Promise((resolve, reject) => {
  let body = '';
  req.on('data', (chunk) => { body += chunk; if (body.length > 10000) reject(new Error('too large')); });
  req.on('end', () => resolve(new URLSearchParams(body)));
  req.on('error', reject);
});

const loginPage = (uid, error = '') => page('Sign in to the test provider', `
  ${error ? `<p class="error" role="alert">${escape(error)}</p>` : ''}
  <form method="post" action="/interaction/${escape(uid)}/login" autocomplete="off">
    <label for="login">Username</label><input id="login" name="login" required autofocus>
    <label for="password">Password</label><input id="password" name="password" type="password" required>
    <button type="submit">Sign in</button>
  </form>`);

const callback = oidc.callback();
const server = createServer(async (req, res) => {
  const match = /^\/interaction\/([\w-]+)(\/login)?$/.exec(new URL(req.url, issuer).pathname);
  if (!match) return callback(req, res);
  try {
    const details = await oidc.interactionDetails(req, res);
    const send = (status, html) => {
      res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      res.end(html);
    };
    if (details.prompt.name !== 'login') return send(501, page('Not implemented', `<p>${escape(details.prompt.name)}</p>`));
    if (req.method === 'GET' && !match[2]) return send(200, loginPage(details.uid));
    if (req.method !== 'POST' || !match[2]) return send(405, page('Method not allowed', ''));
    const form = await readForm(req);
    const account = accountByLogin(form.get('login') || '');
    if (!account || account.password !== form.get('password')) {
      return send(200, loginPage(details.uid, 'Unknown username or wrong password.'));
    }
    return oidc.interactionFinished(req, res, { login: { accountId: account.sub } }, { mergeWithLastSubmission: false });
  } catch (error) {
    res.writeHead(400, { 'Content-Type': 'text/plain' });
    return res.end(`interaction failed: ${error.name}`);
  }
});
server.listen(port, '127.0.0.1', () => console.log(`oidc provider listening on ${issuer}`));
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => server.close(() => process.exit(0)));
