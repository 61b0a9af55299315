/**
 * Pictures of a segmentation, drawn with sharp: the overlay (class colours over the image, with a
 * legend) and the label-map PNG (class index per pixel).
 */
import sharp from 'sharp'

import { abortedError } from './errors'
import { UNLABELED } from './segment'

/** Pixels per slice of per-pixel work: a slice takes milliseconds, and the event loop gets a turn between slices. */
const SLICE = 1 << 20

/**
 * Runs `fn` over [0, n) in slices of about SLICE steps (`cost` steps per item), yielding to the
 * event loop between them; stops with `ABORTED` when `signal` fires.
 */
export async function forSlices(n: number, signal: AbortSignal | undefined, fn: (start: number, end: number) => void, cost = 1): Promise<void> {
  const slice = Math.max(1, Math.floor(SLICE / cost))
  for (let start = 0; start < n; start += slice) {
    if (start > 0) await new Promise((resolve) => setImmediate(resolve))
    if (signal?.aborted) throw abortedError(signal)
    fn(start, Math.min(n, start + slice))
  }
}

/** A stable, well-separated colour per class index (golden-angle hues). */
export function classColor(index: number): [number, number, number] {
  const h = (index * 137.508) % 360
  const s = index % 2 === 0 ? 0.75 : 0.55
  const v = index % 3 === 0 ? 0.95 : 0.8
  const f = (n: number) => {
    const k = (n + h / 60) % 6
    return Math.round(255 * (v - v * s * Math.max(0, Math.min(k, 4 - k, 1))))
  }
  return [f(5), f(3), f(1)]
}

/**
 * The label map as a greyscale PNG: 8-bit with unlabeled pixels as 255 when there are at most 255
 * classes (the ADE20K / Pascal Context convention), else 16-bit with unlabeled as 65535.
 */
export async function labelPng(labels: Uint16Array, width: number, height: number, classes: number, signal?: AbortSignal): Promise<Buffer> {
  if (classes <= 255) {
    // Typed arrays filled in slices: `Uint8Array.from(labels, fn)` aborts the process past V8's array limit.
    const bytes = new Uint8Array(labels.length)
    await forSlices(labels.length, signal, (start, end) => {
      for (let p = start; p < end; p++) bytes[p] = labels[p] === UNLABELED ? 255 : labels[p]
    })
    return greyPng(bytes, width, height)
  }
  // A copy made in this realm: sharp reads the bit depth from the array's constructor.
  return sharp(new Uint16Array(labels), { raw: { width, height, channels: 1 } }).toColourspace('grey16').png().toBuffer()
}

/** `[height * width]` bytes as an 8-bit greyscale PNG. */
export async function greyPng(bytes: Uint8Array, width: number, height: number): Promise<Buffer> {
  // Without the colourspace sharp would write the single channel out as RGB.
  return sharp(bytes, { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toBuffer()
}

/** Text for the SVG legend: markup escaped; characters XML cannot hold at all (controls, U+FFFE/U+FFFF) shown as U+FFFD. */
function escapeXml(text: string): string {
  return text.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`).replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\ufffe\uffff]/g, '\ufffd')
}

/**
 * The image with each labeled pixel blended half-and-half with its class colour, and a legend on
 * the right: the classes present, largest first, with their share of the image.
 */
export async function overlayPng(rgb: Uint8Array, width: number, height: number, labels: Uint16Array, classes: string[], signal?: AbortSignal): Promise<Buffer> {
  const counts = new Float64Array(classes.length)
  const blended = new Uint8Array(rgb.length)
  const colors = classes.map((_, i) => classColor(i))
  await forSlices(labels.length, signal, (start, end) => {
    for (let p = start; p < end; p++) {
      const l = labels[p]
      const o = p * 3
      if (l < classes.length) {
        counts[l] += 1
        const c = colors[l]
        blended[o] = (rgb[o] + c[0]) >> 1
        blended[o + 1] = (rgb[o + 1] + c[1]) >> 1
        blended[o + 2] = (rgb[o + 2] + c[2]) >> 1
      } else {
        blended[o] = rgb[o]
        blended[o + 1] = rgb[o + 1]
        blended[o + 2] = rgb[o + 2]
      }
    }
  })
  const present = classes.map((name, i) => ({ name, i, share: counts[i] / labels.length })).filter((c) => c.share > 0).sort((a, b) => b.share - a.share)
  const row = 22
  const legendWidth = 260
  const legendHeight = Math.max(height, row * present.length + 16)
  const entries = present
    .map((c, k) => {
      const [r, g, b] = colors[c.i]
      const y = 8 + k * row
      const label = `${c.name} ${(100 * c.share).toFixed(1)}%`
      return `<rect x="8" y="${y}" width="16" height="16" fill="rgb(${r},${g},${b})"/><text x="32" y="${y + 13}" font-family="DejaVu Sans, sans-serif" font-size="13" fill="#fff">${escapeXml(label)}</text>`
    })
    .join('')
  const legend = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${legendWidth}" height="${legendHeight}"><rect width="100%" height="100%" fill="#222"/>${entries}</svg>`)
  return sharp(blended, { raw: { width, height, channels: 3 } })
    .extend({ right: legendWidth, bottom: legendHeight - height, background: '#222' })
    .composite([{ input: legend, left: width, top: 0 }])
    .png()
    .toBuffer()
}
