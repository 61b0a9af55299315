/** `ovseg/queue`: segmentation on many machines through a Redis queue (BullMQ). README: Scaling out; docs/scaling.md. */
export { SegmentQueue, type AddOptions, type JobState, type JobStatus, type QueueConnection } from './client'
export { DEFAULT_QUEUE_NAME, DEFAULT_QUEUE_SETTINGS, type SegmentJobData, type SegmentJobResult } from './jobs'
export { SegmentWorker, startWorker, type WorkerOptions } from './worker'
