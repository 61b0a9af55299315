/** The server's default limits, apart from app.ts so that the CLI can show them without loading fastify. */
export const DEFAULT_SERVER_LIMITS = { maxPixels: 4096 * 4096, maxClasses: 1000, maxScoreBytes: 2 ** 30 }

/** Host names a server answers to by default. */
export const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '::1']
