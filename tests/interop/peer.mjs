// A js-libp2p peer with gossipsub's default settings (StrictSign), for castnet's interop test.
// Line protocol: commands as JSON lines on stdin, reports as JSON lines on stdout.
//   argv: <topic>
//   in:  {"cmd":"dial","addr":"/ip4/.../p2p/..."}   {"cmd":"publish","data":"<hex>"}
//        {"cmd":"mesh"}
//   out: {"ready":true,"peer_id":...,"addrs":[...]}   {"dialed":addr}
//        {"subscribed":peer}   {"published":"<hex id>","recipients":n}
//        {"received":"<hex>","from":peer}   {"mesh":[peer, ...]}   {"error":"..."}
import { createInterface } from 'node:readline'

// Node 20 lacks Promise.withResolvers, which libp2p 3's queues use
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve, reject
    const promise = new Promise((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@chainsafe/libp2p-noise')
const { yamux } = await import('@chainsafe/libp2p-yamux')
const { identify } = await import('@libp2p/identify')
const { gossipsub } = await import('@libp2p/gossipsub')
const { multiaddr } = await import('@multiformats/multiaddr')
const { keccak_256: keccak256 } = await import('@noble/hashes/sha3.js')

const topic = process.argv[2]
if (!topic) {
  console.error('usage: node peer.mjs <topic>')
  process.exit(2)
}

const say = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const hex = (bytes) => Buffer.from(bytes).toString('hex')

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    // only the message id differs from the defaults: castnet names a message by keccak256(data)
    pubsub: gossipsub({ msgIdFn: (msg) => keccak256(msg.data) })
  }
})

node.services.pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  if (msg.topic !== topic) return
  say({ received: hex(msg.data), from: msg.type === 'signed' ? msg.from.toString() : null })
})
node.services.pubsub.addEventListener('subscription-change', (evt) => {
  for (const sub of evt.detail.subscriptions) {
    if (sub.topic === topic && sub.subscribe) say({ subscribed: evt.detail.peerId.toString() })
  }
})
node.services.pubsub.subscribe(topic)
await node.start()
say({ ready: true, peer_id: node.peerId.toString(), addrs: node.getMultiaddrs().map(String) })

const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  if (!line.trim()) continue
  try {
    const cmd = JSON.parse(line)
    if (cmd.cmd === 'dial') {
      await node.dial(multiaddr(cmd.addr), { signal: AbortSignal.timeout(10000) })
      say({ dialed: cmd.addr })
    } else if (cmd.cmd === 'publish') {
      const data = Buffer.from(cmd.data, 'hex')
      const result = await node.services.pubsub.publish(topic, data)
      say({ published: hex(keccak256(data)), recipients: result.recipients.length })
    } else if (cmd.cmd === 'mesh') {
      say({ mesh: node.services.pubsub.getMeshPeers(topic).map(String) })
    } else {
      say({ error: `unknown command ${cmd.cmd}` })
    }
  } catch (err) {
    say({ error: String(err && err.message ? err.message : err) })
  }
}
await node.stop()
