/**
 * The web page of `ovseg serve` with the default model, driven in headless Chromium (Debian's,
 * through playwright-core): upload the shipped example, type classes, wait for the overlay, check
 * the legend and a hovered pixel's class against the API, toggle a class. Saves a screenshot to
 * build/artifacts/web-page.png (README's picture is a copy: docs/images/web-page.png). The page
 * works unchanged over a Redis queue (`serve --redis`). With SAM proposals (the tiny random SAM of
 * the `build/sam` fixture), hovering outlines the smallest SAM mask under the pointer.
 */
import { mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

import { chromium, type Browser, type Page } from 'playwright-core'
import sharp from 'sharp'

import { DEFAULT_MODEL_DIR, EXAMPLE_SCENE, loadModelSync, loadSamModelSync, type Model } from '../ts'
import { SegmentQueue, startWorker } from '../ts/queue'
import { createApp } from '../ts/server/app'
import { ROOT } from './helpers'
import { startRedis } from './redis'

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const CLASSES = ['sky', 'grass', 'ring', 'square', 'cross', 'heart']
let W: number
let H: number
let model: Model
let browser: Browser
let app: Awaited<ReturnType<typeof createApp>>
let base: string
let rgb: Uint8Array

beforeAll(async () => {
  model = loadModelSync(DEFAULT_MODEL_DIR)
  app = await createApp(model)
  base = await app.listen({ port: 0, host: '127.0.0.1' })
  const { data, info } = await sharp(EXAMPLE_SCENE.image).removeAlpha().raw().toBuffer({ resolveWithObject: true })
  rgb = new Uint8Array(data)
  W = info.width
  H = info.height
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] })
})

/** Opens the page at `url`, uploads the shipped example, types the classes and waits for the overlay. */
async function segmentExample(page: Page, url: string) {
  await page.goto(url)
  await page.getByTestId('file').setInputFiles(EXAMPLE_SCENE.image)
  await page.getByTestId('classes').fill(CLASSES.join(', '))
  await page.getByTestId('segment').click()
  await page.getByTestId('status').filter({ hasText: /^Done in/ }).waitFor({ timeout: 60000 })
}

afterAll(async () => {
  await browser?.close()
  await app?.close()
  model?.dispose()
})

test('upload, classes, overlay, legend, hover, toggle', async () => {
  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } })
  const errors: string[] = []
  page.on('pageerror', (e) => errors.push(e.message))
  await segmentExample(page, base)

  // The legend lists exactly the classes with pixels, as the API counts them.
  const api = model.segmentSync({ data: rgb, width: W, height: H, channels: 3 }, CLASSES)
  const present = CLASSES.filter((_, i) => api.classPixels[i] > 0)
  const legend = await page.locator('[data-testid=legend] li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.class))
  expect([...legend].sort()).toEqual([...present].sort())

  // Hovering a pixel shows the class the API gives it.
  const canvas = page.getByTestId('overlay')
  const box = await canvas.boundingBox()
  if (!box) throw new Error('the overlay canvas is not visible')
  const [x, y] = [W - 20, H - 15]
  await page.mouse.move(box.x + ((x + 0.5) * box.width) / W, box.y + ((y + 0.5) * box.height) / H)
  const hovered = await page.getByTestId('hover').getAttribute('data-class')
  expect(hovered).toBe(CLASSES[api.labels[y * W + x]])
  await expect(page.getByTestId('hover').textContent()).resolves.toMatch(new RegExp(`^\\(${x}, ${y}\\) ${hovered} [01]\\.\\d\\d$`))

  // Toggling the hovered pixel's class off shows the original pixel there.
  const before = await canvas.evaluate((c: HTMLCanvasElement, [px, py]) => Array.from(c.getContext('2d')!.getImageData(px, py, 1, 1).data.slice(0, 3)), [x, y])
  await page.locator(`[data-testid=legend] li[data-class="${hovered}"] input`).uncheck()
  const after = await canvas.evaluate((c: HTMLCanvasElement, [px, py]) => Array.from(c.getContext('2d')!.getImageData(px, py, 1, 1).data.slice(0, 3)), [x, y])
  const original = Array.from(rgb.slice((y * W + x) * 3, (y * W + x) * 3 + 3))
  expect(after).toEqual(original)
  expect(before).not.toEqual(original)
  await page.locator(`[data-testid=legend] li[data-class="${hovered}"] input`).check()

  mkdirSync(join(ROOT, 'build', 'artifacts'), { recursive: true })
  await page.screenshot({ path: join(ROOT, 'build', 'artifacts', 'web-page.png') })
  expect(errors).toEqual([])
})

test('a bad request shows the error code on the page', async () => {
  const page = await browser.newPage()
  await page.goto(base)
  await page.getByTestId('file').setInputFiles({ name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not a png') })
  await page.getByTestId('classes').fill('sky')
  await page.getByTestId('segment').click()
  await expect(page.getByTestId('status').filter({ hasText: /INVALID_IMAGE/ }).waitFor({ timeout: 30000 })).resolves.toBeUndefined()
})

test('with SAM proposals, hovering outlines the smallest SAM mask under the pointer', async () => {
  mkdirSync(join(ROOT, 'build', 'artifacts'), { recursive: true })
  const sam = loadSamModelSync(join(ROOT, 'build', 'sam', 'model'))
  const samOptions = { pointsPerSide: 4, predIouThresh: 0, stabilityScoreThresh: 0, boxNmsThresh: 1, maxMasks: 6 }
  const front = await createApp(model, { proposals: { generator: true, sam, samOptions } })
  try {
    const url = await front.listen({ port: 0, host: '127.0.0.1' })
    const page = await browser.newPage({ viewport: { width: 1100, height: 700 } })
    const errors: string[] = []
    page.on('pageerror', (e) => errors.push(e.message))
    await segmentExample(page, url)

    // The SAM masks the page was sent, from the same request through the API.
    const r = model.segmentSync({ data: rgb, width: W, height: H, channels: 3 }, CLASSES, { sam, samOptions: { ...samOptions, returnMasks: true } })
    const sams = r.segments.filter((s) => s.source === 'sam' && s.used)
    expect(sams.length).toBeGreaterThan(0)
    const masks = r.samMasks as Uint8Array
    const area = (k: number) => masks.subarray(k * W * H, (k + 1) * W * H).reduce((a, b) => a + b, 0)
    const [x, y] = [Math.floor(W / 2), Math.floor(H / 2)]
    const under = sams.filter((s) => masks[s.index * W * H + y * W + x] === 1).sort((a, b) => area(a.index) - area(b.index))
    expect(under.length).toBeGreaterThan(0)
    const smallest = under[0].index

    const canvas = page.getByTestId('overlay')
    const box = await canvas.boundingBox()
    if (!box) throw new Error('the overlay canvas is not visible')
    await page.mouse.move(box.x + ((x + 0.5) * box.width) / W, box.y + ((y + 0.5) * box.height) / H)
    await expect(page.getByTestId('hover').getAttribute('data-mask')).resolves.toBe(String(smallest))
    await expect(page.getByTestId('hover').textContent()).resolves.toContain(`SAM mask ${smallest}`)
    // The mask's first pixel in raster order is on its outline (nothing above it): white.
    const first = masks.subarray(smallest * W * H, (smallest + 1) * W * H).indexOf(1)
    const pixel = () => canvas.evaluate((c: HTMLCanvasElement, p) => Array.from(c.getContext('2d')!.getImageData(p % c.width, Math.floor(p / c.width), 1, 1).data.slice(0, 3)), first)
    await expect(pixel()).resolves.toEqual([255, 255, 255])
    await page.screenshot({ path: join(ROOT, 'build', 'artifacts', 'web-page-sam.png') })
    // Leaving the picture takes the outline away.
    await page.mouse.move(box.x + box.width + 50, box.y)
    await expect(pixel()).resolves.not.toEqual([255, 255, 255])
    expect(errors).toEqual([])
  } finally {
    await front.close()
    sam.dispose()
  }
})

test('the same page over a Redis queue (serve --redis, one worker): the same legend', async () => {
  const scratch = mkdtempSync(join(tmpdir(), 'ovseg-web-redis-'))
  const redis = await startRedis(scratch)
  const queue = await SegmentQueue.connect({ redis: redis.url, queue: 'web' })
  const worker = await startWorker(model, { redis: redis.url, queue: 'web' })
  const front = await createApp(queue)
  try {
    const page = await browser.newPage()
    await segmentExample(page, await front.listen({ port: 0, host: '127.0.0.1' }))
    const api = model.segmentSync({ data: rgb, width: W, height: H, channels: 3 }, CLASSES)
    const legend = await page.locator('[data-testid=legend] li').evaluateAll((lis) => lis.map((li) => (li as HTMLElement).dataset.class))
    expect([...legend].sort()).toEqual(CLASSES.filter((_, i) => api.classPixels[i] > 0).sort())
  } finally {
    await front.close()
    await worker.close()
    await queue.close()
    await redis.stop()
  }
})
