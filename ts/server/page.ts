/**
 * The web page of `ovseg serve`: upload or drop an image, type classes, see the overlay with a
 * legend, hover a pixel for its class and score, toggle classes. With SAM proposals, hovering also
 * outlines the smallest SAM mask under the pointer (the answer's `mask` runs, asked for with
 * `masks=true`). One file, no build step: the overlay is drawn in the browser from the image, the
 * label PNG and the class colours the API returns, so toggling a class needs no new request.
 */
export const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ovseg</title>
<style>
  body { font: 14px system-ui, sans-serif; margin: 0; background: #111; color: #eee; }
  header { padding: 12px 16px; background: #1c1c1c; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
  header h1 { font-size: 16px; margin: 0 12px 0 0; }
  input[type=text] { width: 28em; padding: 6px; background: #222; color: #eee; border: 1px solid #444; }
  button, select { padding: 6px 12px; background: #2d5; color: #111; border: 0; font-weight: 600; cursor: pointer; }
  select { background: #333; color: #eee; }
  main { display: flex; gap: 16px; padding: 16px; }
  #drop { border: 2px dashed #555; min-width: 320px; min-height: 240px; display: flex; align-items: center; justify-content: center; position: relative; }
  #drop.over { border-color: #2d5; }
  #drop canvas { display: none; cursor: crosshair; image-rendering: pixelated; }
  #legend { list-style: none; padding: 0; margin: 0; min-width: 220px; }
  #legend li { display: flex; align-items: center; gap: 6px; padding: 3px 0; }
  #legend .swatch { width: 14px; height: 14px; display: inline-block; }
  #status { color: #aaa; }
  #status.error { color: #f66; }
  #hover { min-height: 1.4em; margin-bottom: 8px; }
</style>
</head>
<body>
<header>
  <h1>ovseg</h1>
  <input type="file" id="file" accept="image/*" data-testid="file">
  <input type="text" id="classes" placeholder="classes, comma-separated: grass, red car, sky" data-testid="classes">
  <select id="mode" data-testid="mode"><option value="">model default</option><option value="semantic">semantic</option><option value="demo">demo</option></select>
  <button id="go" data-testid="segment">Segment</button>
  <span id="status" data-testid="status">Choose or drop an image, type classes.</span>
</header>
<main>
  <div id="drop" data-testid="drop"><span id="hint">drop an image here</span><canvas id="view" data-testid="overlay"></canvas></div>
  <div>
    <div id="hover" data-testid="hover"></div>
    <ul id="legend" data-testid="legend"></ul>
  </div>
</main>
<script>
(() => {
  const $ = (id) => document.getElementById(id)
  const view = $('view')
  let file = null
  let result = null // { width, height, classes, labels, confidence, image: ImageData, masks: SAM masks, base: ImageData }
  let outlined = null // the SAM mask outlined now
  const enabled = new Set()

  function setStatus(text, isError) {
    $('status').textContent = text
    $('status').className = isError ? 'error' : ''
  }

  function pick(f) {
    if (!f) return
    file = f
    setStatus(f.name + ' ready')
  }
  $('file').addEventListener('change', (e) => pick(e.target.files[0]))
  const drop = $('drop')
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over') })
  drop.addEventListener('dragleave', () => drop.classList.remove('over'))
  drop.addEventListener('drop', (e) => { e.preventDefault(); drop.classList.remove('over'); pick(e.dataTransfer.files[0]) })

  async function pixelsOf(source, width, height) {
    const bitmap = await createImageBitmap(source)
    const c = new OffscreenCanvas(width, height)
    const ctx = c.getContext('2d')
    ctx.drawImage(bitmap, 0, 0, width, height)
    return ctx.getImageData(0, 0, width, height)
  }

  async function greyOf(base64, width, height) {
    const bytes = Uint8Array.from(atob(base64), (ch) => ch.charCodeAt(0))
    const data = (await pixelsOf(new Blob([bytes], { type: 'image/png' }), width, height)).data
    const out = new Uint8Array(width * height)
    for (let i = 0; i < out.length; i++) out[i] = data[i * 4]
    return out
  }

  // A SAM segment's mask from its runs (alternating 0s and 1s, 0s first, over its box row by row).
  function unpack(s) {
    const [x0, y0, x1, y1] = s.mask.box
    const w = x1 - x0
    const bits = new Uint8Array(w * (y1 - y0))
    let at = 0
    s.mask.counts.forEach((n, i) => { if (i % 2) bits.fill(1, at, at + n); at += n })
    return { index: s.index, name: s.class, score: s.score, x0, y0, x1, y1, w, bits, area: bits.reduce((a, b) => a + b, 0) }
  }

  function maskAt(x, y) {
    let best = null
    for (const m of result.masks) {
      if (x < m.x0 || y < m.y0 || x >= m.x1 || y >= m.y1 || !m.bits[(y - m.y0) * m.w + x - m.x0]) continue
      if (!best || m.area < best.area) best = m
    }
    return best
  }

  // The overlay with the outline of mask m (pixels inside it with a 4-neighbour outside) in white.
  function outline(m) {
    if (m === outlined) return
    outlined = m
    const out = new ImageData(new Uint8ClampedArray(result.base.data), result.width, result.height)
    if (m) {
      const inside = (x, y) => x >= m.x0 && y >= m.y0 && x < m.x1 && y < m.y1 && m.bits[(y - m.y0) * m.w + x - m.x0] === 1
      for (let y = m.y0; y < m.y1; y++) {
        for (let x = m.x0; x < m.x1; x++) {
          if (!inside(x, y) || (inside(x - 1, y) && inside(x + 1, y) && inside(x, y - 1) && inside(x, y + 1))) continue
          out.data.set([255, 255, 255, 255], (y * result.width + x) * 4)
        }
      }
    }
    view.getContext('2d').putImageData(out, 0, 0)
  }

  function draw() {
    const { width, height, classes, labels, image } = result
    const out = new ImageData(width, height)
    for (let p = 0; p < labels.length; p++) {
      const o = p * 4
      const l = labels[p]
      const c = l < classes.length && enabled.has(l) ? classes[l].color : null
      out.data[o] = c ? (image.data[o] + c[0]) >> 1 : image.data[o]
      out.data[o + 1] = c ? (image.data[o + 1] + c[1]) >> 1 : image.data[o + 1]
      out.data[o + 2] = c ? (image.data[o + 2] + c[2]) >> 1 : image.data[o + 2]
      out.data[o + 3] = 255
    }
    view.width = width
    view.height = height
    // Small images are shown larger, large ones fit the window; hover maps back to pixels.
    const scale = Math.min(Math.max(1, 480 / width), (0.7 * window.innerWidth) / width, (0.8 * window.innerHeight) / height)
    view.style.width = Math.round(width * scale) + 'px'
    view.style.height = Math.round(height * scale) + 'px'
    view.getContext('2d').putImageData(out, 0, 0)
    result.base = out
    outlined = null
    view.style.display = 'block'
    $('hint').style.display = 'none'
  }

  function legend() {
    const ul = $('legend')
    ul.textContent = ''
    result.classes
      .filter((c) => c.pixels > 0)
      .sort((a, b) => b.pixels - a.pixels)
      .forEach((c) => {
        const li = document.createElement('li')
        li.dataset.class = c.name
        const box = document.createElement('input')
        box.type = 'checkbox'
        box.checked = enabled.has(c.index)
        box.setAttribute('aria-label', 'show ' + c.name)
        box.addEventListener('change', () => { box.checked ? enabled.add(c.index) : enabled.delete(c.index); draw() })
        const sw = document.createElement('span')
        sw.className = 'swatch'
        sw.style.background = 'rgb(' + c.color.join(',') + ')'
        const name = document.createElement('span')
        name.className = 'name'
        name.textContent = c.name + ' ' + (100 * c.share).toFixed(1) + '%'
        li.append(box, sw, name)
        ul.append(li)
      })
  }

  view.addEventListener('mousemove', (e) => {
    if (!result) return
    const r = view.getBoundingClientRect()
    const x = Math.floor(((e.clientX - r.left) * result.width) / r.width)
    const y = Math.floor(((e.clientY - r.top) * result.height) / r.height)
    if (x < 0 || y < 0 || x >= result.width || y >= result.height) return
    const p = y * result.width + x
    const l = result.labels[p]
    const name = l < result.classes.length ? result.classes[l].name : 'unlabeled'
    const m = maskAt(x, y)
    $('hover').textContent = '(' + x + ', ' + y + ') ' + name + (l < result.classes.length ? ' ' + (result.confidence[p] / 255).toFixed(2) : '') +
      (m ? ' · SAM mask ' + m.index + ': ' + m.name + ' ' + m.score.toFixed(2) : '')
    $('hover').dataset.class = name
    $('hover').dataset.mask = m ? String(m.index) : ''
    outline(m)
  })
  view.addEventListener('mouseleave', () => { if (result) outline(null) })

  $('go').addEventListener('click', async () => {
    if (!file) return setStatus('Choose an image first.', true)
    const classes = $('classes').value
    if (!classes.trim()) return setStatus('Type at least one class.', true)
    const form = new FormData()
    form.append('classes', classes)
    form.append('mode', $('mode').value)
    form.append('masks', 'true')
    form.append('image', file)
    setStatus('Segmenting...')
    $('go').disabled = true
    try {
      const response = await fetch('/segment', { method: 'POST', body: form })
      const body = await response.json()
      if (!response.ok) throw new Error(body.error ? body.error.code + ': ' + body.error.message : response.statusText)
      const { width, height } = body
      result = {
        width, height, classes: body.classes,
        labels: await greyOf(body.png.labels, width, height),
        confidence: await greyOf(body.png.confidence, width, height),
        image: await pixelsOf(file, width, height),
        masks: body.segments.filter((s) => s.mask).map(unpack),
      }
      enabled.clear()
      body.classes.forEach((c) => enabled.add(c.index))
      draw()
      legend()
      setStatus('Done in ' + Math.round(body.timings.totalMs) + ' ms (' + body.executionProvider + ').')
    } catch (err) {
      setStatus(String(err.message || err), true)
    } finally {
      $('go').disabled = false
    }
  })
})()
</script>
</body>
</html>
`
