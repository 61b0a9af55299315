// The server's packages are optional peers of ovseg, so that installs that only segment stay small:
// fail with a coded error that says what to install, before the server's modules import them.
import { OvsegError } from '../errors'

const missing = ['fastify', '@fastify/multipart'].filter((name) => {
  try {
    require.resolve(name)
    return false
  } catch {
    return true
  }
})
if (missing.length > 0) {
  throw new OvsegError(
    'DEPENDENCY_MISSING',
    `the ovseg server needs the optional packages ${missing.join(' and ')}: npm install fastify@5 @fastify/multipart@10`,
  )
}
