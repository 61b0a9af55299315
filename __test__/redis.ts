/** A real Redis server for the queue's tests: Debian's redis-server on a free loopback port, with an append-only file so that a restart keeps the queue. */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { createServer } from 'node:net'

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })
}

export interface RedisServer {
  url: string
  /** Stops the server (SIGTERM: it flushes its append-only file) and waits for it to exit. */
  stop(): Promise<void>
  /** Starts it again on the same port and directory. */
  start(): Promise<void>
}

/** Starts redis-server with its data in `dir`. Fails loudly (never skips) without it: scripts/setup.sh installs it. */
export async function startRedis(dir: string): Promise<RedisServer> {
  if (spawnSync('redis-server', ['--version']).status !== 0) throw new Error('redis-server is not installed: run scripts/setup.sh (apt-get install redis-server)')
  const port = await freePort()
  let child: ChildProcess | undefined
  const start = () =>
    new Promise<void>((resolve, reject) => {
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--loglevel', 'warning']
      const c = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] })
      child = c
      c.once('error', reject)
      c.once('exit', (code) => reject(new Error(`redis-server exited (${code}) before it was ready`)))
      // Ready when it answers PING.
      const poll = () => {
        const r = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' })
        if (r.stdout.trim() === 'PONG') resolve()
        else setTimeout(poll, 50)
      }
      poll()
    })
  await start()
  return {
    url: `redis://127.0.0.1:${port}`,
    start,
    stop: () =>
      new Promise<void>((resolve) => {
        const c = child as ChildProcess
        if (c.exitCode !== null) return resolve()
        c.removeAllListeners('exit')
        c.once('exit', () => resolve())
        c.kill('SIGTERM')
      }),
  }
}
