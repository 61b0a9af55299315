// BullMQ and its Redis client are optional peers of ovseg, as the server's packages are: fail with a
// coded error that says what to install, before the queue's modules import them.
import { OvsegError } from '../errors'

const missing = ['bullmq', 'ioredis'].filter((name) => {
  try {
    require.resolve(name)
    return false
  } catch {
    return true
  }
})
if (missing.length > 0) {
  throw new OvsegError('DEPENDENCY_MISSING', `ovseg's Redis queue needs the optional packages ${missing.join(' and ')}: npm install bullmq@6 ioredis@6`)
}
