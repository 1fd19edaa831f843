// The chapter's worker (listing 6.8), ported to `discover --exec`:
//
//   discover watch /services/couchbase --exec node worker.js
//
// discover puts the backends in SERVICES_COUCHBASE (comma-separated, in key
// order) and restarts this process when a backend is set or deleted, never
// on a heartbeat. So the etcd client, the watcher and the "exit on set"
// logic of the original are all gone: the app just reads its environment.
// Only Node's built-in modules are used.
'use strict'
const http = require('http')

const backends = (process.env.SERVICES_COUCHBASE || '')
  .split(',')
  .filter(Boolean)
const connection = `couchbase://${backends.join(',')}`
console.log('current connection:', connection)

if (backends.length === 0) {
  console.log('no couchbase backend registered yet; waiting for discover to restart us')
}

// Couchbase's admin port answers HTTP: talk to every backend for real.
function hostPort (backend) {
  const m = backend.match(/^\[?([^\]]+?)\]?(?::(\d+))?$/)
  return { host: m ? m[1] : backend, port: m && m[2] ? Number(m[2]) : 8091 }
}

function probe (backend) {
  const { host, port } = hostPort(backend)
  const req = http.get({ host, port, path: '/', timeout: 2000 }, res => {
    res.resume()
    console.log(`backend ${host}:${port} answered HTTP ${res.statusCode}`)
  })
  req.on('timeout', () => req.destroy(new Error('timed out')))
  req.on('error', err => console.log(`backend ${host}:${port} unreachable: ${err.message}`))
}

function round () {
  backends.forEach(probe)
}

round()
const timer = setInterval(round, Number(process.env.PROBE_INTERVAL_MS || 5000))

// discover forwards SIGTERM on restart and on shutdown.
process.on('SIGTERM', () => {
  console.log('stopping')
  clearInterval(timer)
  process.exit(0)
})
