// Loads the bundled tiny model and runs the pieces: tokenizer, class embeddings with OVSeg's 14
// templates, the mask-prompted image encoder on a masked crop, and segment() end to end (mask
// generator, CLIP on every mask, ensemble, label map).
// The tiny model has random weights: the scores show the plumbing works, not what the image is.
const { loadModel, TINY_RANDOM_MODEL_DIR, runtimeInfo } = require('..')

async function main() {
  const model = await loadModel(TINY_RANDOM_MODEL_DIR)
  const { imageSize } = model
  console.log(`ONNX Runtime ${runtimeInfo().version} on ${model.executionProvider.name}; model ${model.manifest.name}, prompt depth ${model.promptDepth}`)

  const ids = model.tokenize(['a photo of a cat'])
  console.log('tokens of "a photo of a cat":', Array.from(ids.subarray(0, 7)).join(' '))

  const classes = ['grass', 'red car', 'skyscraper']
  const text = await model.classEmbeddings(classes)

  // One RGB crop at the encoder's input size, with a disc-shaped foreground mask.
  const pixels = new Uint8Array(imageSize * imageSize * 3)
  const masks = new Uint8Array(imageSize * imageSize)
  for (let y = 0; y < imageSize; y++) {
    for (let x = 0; x < imageSize; x++) {
      const i = y * imageSize + x
      pixels.set([200, 40 + x, 40 + y], i * 3)
      masks[i] = Math.hypot(x - imageSize / 2, y - imageSize / 2) < imageSize / 3 ? 1 : 0
    }
  }
  const image = await model.encodeImage({ pixels, masks })

  const scores = classes.map((name, c) => {
    let dot = 0
    for (let d = 0; d < text.dim; d++) dot += image.data[d] * text.data[c * text.dim + d]
    return `${name}: ${(100 * dot).toFixed(2)}`
  })
  console.log('100 * cos(image, class):', scores.join(', '))

  // A 320x240 image segmented into the classes (the generator proposes the masks).
  const width = 320
  const height = 240
  const data = new Uint8Array(width * height * 3).map((_, i) => (i % 3 === 2 ? 200 : (i * 7) % 256))
  const seg = await model.segment({ data, width, height, channels: 3 }, classes)
  const shares = seg.classes.map((name, c) => `${name} ${((100 * seg.classPixels[c]) / (width * height)).toFixed(1)}%`)
  console.log(`segment(): ${seg.segments.length} masks, ${seg.segments.filter((s) => s.used).length} used; ${shares.join(', ')}; ` +
    `${seg.timings.nativeMs.toFixed(0)} ms (${seg.timings.onnxRuntimeMs.toFixed(0)} ms in ONNX Runtime)`)
  model.dispose()
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
