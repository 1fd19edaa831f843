// The chapter's web app (listing 6.13), ported to `discover --exec`:
//
//   PORT=3000 discover watch /services/couchbase /services/memcached --exec node app.js
//
// discover gives SERVICES_COUCHBASE and SERVICES_MEMCACHED (comma-separated,
// in key order) and restarts this process when either really changes.
// Only Node's built-in modules are used: an http server, a session cookie,
// and real TCP round trips to every memcached backend ("version").
'use strict'
const http = require('http')
const net = require('net')
const crypto = require('crypto')

const list = v => (v || '').split(',').filter(Boolean)

// "10.1.0.2:11211", "10.1.0.2", "[fd00::2]:11211" or "fd00::2" as
// { host, port }, with the default port when none is given.
function hostPort (backend, port) {
  const v6 = backend.match(/^\[([^\]]+)\](?::(\d+))?$/)
  if (v6) return { host: v6[1], port: Number(v6[2] || port) }
  if ((backend.match(/:/g) || []).length > 1) return { host: backend, port } // bare IPv6
  const [host, p] = backend.split(':')
  return { host, port: Number(p || port) }
}
const label = ({ host, port }) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`)

const config = {
  couchbase: `couchbase://${list(process.env.SERVICES_COUCHBASE).join(',')}`,
  memcached: list(process.env.SERVICES_MEMCACHED).map(b => label(hostPort(b, 11211)))
}
console.log('current config:', JSON.stringify(config))

// Ask each memcached backend for its version, over TCP. memcached keeps
// the connection open, so the answer is the first line; then say "quit".
function memcachedVersion (backend) {
  return new Promise(resolve => {
    const sock = net.connect(hostPort(backend, 11211))
    let data = ''
    let done = false
    const finish = r => { if (!done) { done = true; resolve({ backend, ...r }) } }
    sock.setTimeout(2000, () => sock.destroy(new Error('timed out')))
    sock.on('connect', () => sock.write('version\r\n'))
    sock.on('data', d => {
      data += d
      const eol = data.indexOf('\r\n')
      if (eol >= 0) {
        finish({ reply: data.slice(0, eol) })
        sock.end('quit\r\n')
      }
    })
    sock.on('end', () => finish({ error: 'closed without an answer' }))
    sock.on('error', err => finish({ error: err.message }))
  })
}

async function checkMemcached () {
  const results = await Promise.all(config.memcached.map(memcachedVersion))
  for (const r of results) {
    console.log(r.error ? `memcached ${r.backend} unreachable: ${r.error}` : `memcached ${r.backend} answered: ${r.reply}`)
  }
  return results
}

const sessions = new Map()

const server = http.createServer(async (req, res) => {
  if (req.url !== '/') {
    res.writeHead(404, { 'content-type': 'text/plain' })
    return res.end('not found\n')
  }
  // The chapter stored express sessions in memcached; a cookie shows the
  // session layer is there.
  const cookie = (req.headers.cookie || '').match(/(?:^|;\s*)sid=([0-9a-f]+)/)
  let sid = cookie && cookie[1]
  if (!sid || !sessions.has(sid)) {
    sid = crypto.randomBytes(12).toString('hex')
    sessions.set(sid, { created: Date.now(), hits: 0 })
  }
  const session = sessions.get(sid)
  session.hits++
  const memcached = await checkMemcached()
  res.writeHead(200, {
    'content-type': 'application/json',
    'set-cookie': `sid=${sid}; HttpOnly; Path=/`
  })
  res.end(JSON.stringify({ ...config, memcachedStatus: memcached, session: { id: sid, hits: session.hits } }) + '\n')
})

const port = Number(process.env.PORT || 3000)
server.listen(port, process.env.HOST || '0.0.0.0', () => {
  console.log(`listening on ${port}`)
  checkMemcached()
})

process.on('SIGTERM', () => {
  console.log('stopping')
  server.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
})
