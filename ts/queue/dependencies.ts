// BullMQ and its Redis client are optional peers of ovseg, as the server's packages are.
import { requireOptionalPeers } from '../optional-peers'

requireOptionalPeers(['bullmq', 'ioredis'], "ovseg's Redis queue", 'npm install bullmq@6 ioredis@6')
