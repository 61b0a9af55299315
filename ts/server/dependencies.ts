// The server's packages are optional peers of ovseg, so that installs that only segment stay small.
import { requireOptionalPeers } from '../optional-peers'

requireOptionalPeers(['fastify', '@fastify/multipart'], 'the ovseg server', 'npm install fastify@5 @fastify/multipart@10')
