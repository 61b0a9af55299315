/**
 * Optional peers of ovseg (the server's fastify, the queue's BullMQ): fail with a coded error that
 * says what to install, before a module imports them.
 */
import { OvsegError } from './errors'

/** Throws `DEPENDENCY_MISSING` naming `feature` and the `install` command when any of `packages` cannot be resolved. */
export function requireOptionalPeers(packages: string[], feature: string, install: string): void {
  const missing = packages.filter((name) => {
    try {
      require.resolve(name)
      return false
    } catch {
      return true
    }
  })
  if (missing.length > 0) {
    throw new OvsegError('DEPENDENCY_MISSING', `${feature} needs the optional packages ${missing.join(' and ')}: ${install}`)
  }
}
