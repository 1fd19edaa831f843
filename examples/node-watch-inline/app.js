// The other pattern: the app watches by itself, as the chapter's apps did
// with node-etcd, but through `discover watch` and readline instead of an
// etcd client library. It exits on a `set` (a backend moved or appeared),
// and systemd's Restart= starts it again with the new backends: exactly
// the chapter's behaviour, minus the restarts on heartbeats.
//
//   node app.js            (discover on PATH, or DISCOVER_BIN=/path/to/discover)
'use strict'
const { spawn } = require('child_process')
const readline = require('readline')

const bin = process.env.DISCOVER_BIN || 'discover'
const prefix = process.env.WATCH_PREFIX || '/services/couchbase'
const discover = spawn(bin, ['watch', prefix], { stdio: ['ignore', 'pipe', 'inherit'] })

function start (backends) {
  console.log('current connection:', `couchbase://${backends.join(',')}`)
}

readline.createInterface({ input: discover.stdout }).on('line', line => {
  const msg = JSON.parse(line)
  if (msg.action === 'get') start(msg.node.nodes.map(v => v.value)) // was getSync(...).body.node.nodes
  if (msg.action === 'set') { // was watcher.on('set', ...)
    console.log('new couchbase config', JSON.stringify(msg.node))
    process.exit(0)
  }
})

discover.on('exit', code => {
  console.log(`discover exited with ${code}`)
  process.exit(code === null ? 1 : code)
})
process.on('SIGTERM', () => { discover.kill('SIGTERM'); process.exit(0) })
