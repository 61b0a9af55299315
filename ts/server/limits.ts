/** The server's limits, apart from app.ts so that the CLI and the queue workers use them without loading fastify. */
import sharp from 'sharp'

import { OvsegError } from '../errors'
import { checkScoreSize, resultClassCount } from '../segment'

export const DEFAULT_SERVER_LIMITS = { maxPixels: 4096 * 4096, maxClasses: 1000, maxScoreBytes: 2 ** 30 }

export type WorkLimits = typeof DEFAULT_SERVER_LIMITS

/** Host names a server answers to by default. */
export const LOOPBACK_HOSTS = ['localhost', '127.0.0.1', '::1']

/** The image's size from its header alone (sharp's metadata does not decode pixels). */
export async function headerSize(image: Buffer): Promise<{ width: number; height: number }> {
  let meta: sharp.Metadata
  try {
    meta = await sharp(image, { limitInputPixels: false }).metadata()
  } catch (err) {
    throw new OvsegError('INVALID_IMAGE', `cannot decode the image: ${(err as Error).message}`)
  }
  if (!meta.width || !meta.height) throw new OvsegError('INVALID_IMAGE', 'the image header has no size')
  return { width: meta.width, height: meta.height }
}

/**
 * Refuses work over `limits`: pixels, and classes x pixels (the score maps the confidence PNG
 * needs). `mode` undefined (the model's default, unknown to a queue front end) is checked as the
 * larger of the modes.
 */
export function checkWork(classes: string[], mode: string | undefined, width: number, height: number, limits: WorkLimits): void {
  if (width * height > limits.maxPixels) {
    throw new OvsegError('LIMIT_EXCEEDED', `the image has ${width}x${height} pixels, over the server's limit of ${limits.maxPixels} (option maxPixels)`)
  }
  const checked = mode ?? 'demo'
  const scoreClasses = resultClassCount(classes.length, checked)
  if (scoreClasses * width * height * 4 > limits.maxScoreBytes) {
    throw new OvsegError('LIMIT_EXCEEDED', `${scoreClasses} classes over ${width}x${height} pixels need ${scoreClasses * width * height * 4} bytes of score maps, over the server's limit of ${limits.maxScoreBytes} (option maxScoreBytes)`)
  }
  checkScoreSize(classes, width, height, { mode: checked, scores: true })
}
