'use strict';
// A tiny Invoices API (node:http, no framework) whose routes usher protects.
//
//   node example-server.js --usher 127.0.0.1:50051 --listen 127.0.0.1:3000
//   curl -i -H "Authorization: Bearer $(usher mint --audience api/invoices --scope invoices.read)" \
//     http://127.0.0.1:3000/invoices
//
// A DPoP-bound token goes with a proof made for this request's method and URI (the middleware
// passes the DPoP header, the method and the URI this server sees to usher):
//
//   T=$(usher mint --audience api/invoices --scope invoices.read --dpop-key dpop.pem)
//   curl -i -H "Authorization: DPoP $T" \
//     -H "DPoP: $(usher proof --key dpop.pem --method GET --uri http://127.0.0.1:3000/invoices --token $T)" \
//     http://127.0.0.1:3000/invoices

const http = require('node:http');
const { parseArgs } = require('node:util');
const { createUsherAuth } = require('./usherAuth');

// Route -> scopes the token must grant.
const ROUTES = {
  '/invoices': ['invoices.read'],
};

function createApp(auth, { log = () => {} } = {}) {
  const guards = Object.fromEntries(
    Object.entries(ROUTES).map(([route, requiredScopes]) => [route, auth.middleware({ requiredScopes })]));
  return (req, res) => {
    const route = new URL(req.url, 'http://localhost').pathname;
    const guard = guards[route];
    if (!guard) {
      res.writeHead(404, { 'content-type': 'application/json' });
      return res.end('{"error":"Not Found"}');
    }
    res.on('finish', () => log(`${req.method} ${route} -> ${res.statusCode}`));
    guard(req, res, (err) => {
      if (err) {
        res.writeHead(500, { 'content-type': 'application/json' });
        return res.end('{"error":"Internal Server Error"}');
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ invoices: [], subject: req.usher.subject, clientId: req.usher.clientId }));
    });
  };
}

function main() {
  const { values } = parseArgs({
    options: {
      usher: { type: 'string', default: '127.0.0.1:50051' },
      audience: { type: 'string', default: 'api/invoices' },
      listen: { type: 'string', default: '127.0.0.1:3000' },
    },
  });
  const i = values.listen.lastIndexOf(':');
  const host = values.listen.slice(0, i);
  const port = Number(values.listen.slice(i + 1));
  const auth = createUsherAuth({ target: values.usher, audience: values.audience });
  const server = http.createServer(createApp(auth, { log: console.log }));
  server.listen(port, host, () => {
    console.log(`Invoices API on http://${host}:${server.address().port}, asking usher at ${values.usher}`);
  });
  const stop = () => { server.close(); server.closeAllConnections(); auth.close(); };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

if (require.main === module) main();

module.exports = { createApp, ROUTES };
