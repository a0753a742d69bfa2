// A real OpenID provider for Modelport's SSO tests: panva/oidc-provider (a certified
// implementation) on 127.0.0.1, a port chosen by the kernel.
//
//   node provider.mjs <config.json>
//
// config.json (written by tests/oidc_provider.py):
//   { "accounts_file": "...", "clients": [ {client_id, client_secret, redirect_uris,
//     post_logout_redirect_uris} ], "jwks": { "keys": [ <private JWK> ] } }
// The accounts file is read at every lookup, so a test changes groups or disables an account
// between two sign-ins: [ {sub, email, name, groups, disabled} ]. A disabled (or unknown)
// account is refused by the provider: the platform only ever gets error=access_denied.
// Prints one line, {"issuer": "http://127.0.0.1:<port>"}, once it listens.
import fs from 'node:fs';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));

function account(id) {
  const accounts = JSON.parse(fs.readFileSync(config.accounts_file, 'utf8'));
  const found = accounts.find((a) => a.sub === id);
  // A disabled account: the provider refuses it (the client gets error=access_denied).
  if (found && found.disabled) throw new errors.AccessDenied('this account is disabled');
  return found;
}

const plainPage = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8">
<title>${title}</title></head><body><h1>${title}</h1>${body}</body></html>`;

const server = http.createServer();
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const provider = new Provider(issuer, {
    clients: config.clients.map((c) => ({
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_post',
      ...c,
    })),
    jwks: config.jwks,
    cookies: { keys: ['modelport-test-cookie-key'] },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'given_name', 'family_name', 'preferred_username'],
      groups: ['groups'],
    },
    scopes: ['openid', 'email', 'profile', 'groups'],
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource: async (ctx, form) => {
          ctx.body = plainPage('Sign out', `${form}<button autofocus type="submit"
            form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>`);
        },
        postLogoutSuccessSource: async (ctx) => {
          ctx.body = plainPage('Signed out', '<p>You are signed out.</p>');
        },
      },
    },
    async findAccount(_ctx, id) {
      const found = account(id);
      if (!found) return undefined;
      return {
        accountId: found.sub,
        async claims() {
          const [given, ...rest] = (found.name || '').split(' ');
          return {
            sub: found.sub,
            email: found.email,
            email_verified: true,
            name: found.name,
            given_name: given || undefined,
            family_name: rest.join(' ') || undefined,
            preferred_username: found.preferred_username || found.sub,
            groups: found.groups || [],
          };
        },
      };
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = plainPage('Error', `<pre id="op-error">${JSON.stringify(out)}</pre>`);
    },
  });
  for (const event of ['server_error', 'end_session.error', 'authorization.error',
    'grant.error', 'userinfo.error']) {
    provider.on(event, (_ctx, error) => {
      process.stdout.write(`${event}: ${error} ${error.error_description || ''} ${error.cause || ''}\n`);
    });
  }
  server.on('request', provider.callback());
  process.stdout.write(`${JSON.stringify({ issuer })}\n`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
