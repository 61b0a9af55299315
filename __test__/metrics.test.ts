/** Segmentation metrics against a confusion matrix worked out by hand. */
import { ConfusionMatrix, UNLABELED } from '../ts'
import { codeOf } from './helpers'

test('IoU, accuracies and fwIoU of a hand-computed case', () => {
  // Pairs (truth, prediction) after dropping the ignored pixel: (0,0) (0,1) (1,1) (1,1) (2,0) (2,none) (1,2).
  const truth = new Uint8Array([0, 0, 1, 1, 2, 255, 2, 1])
  const prediction = new Uint16Array([0, 1, 1, 1, 0, 2, UNLABELED, 2])
  const m = new ConfusionMatrix(4).add(prediction, truth).metrics()
  // Class 0: intersection 1, support 2, predicted 2 -> 1/3. Class 1: 2, 3, 3 -> 1/2. Class 2: 0, 2, 1 -> 0.
  // Class 3 appears nowhere: no IoU, left out of the means.
  expect(m.perClass.map((c) => c.support)).toEqual([2, 3, 2, 0])
  const close = (a: number | null, b: number) => expect(a).toBeCloseTo(b, 12)
  close(m.perClass[0].iou, 1 / 3)
  close(m.perClass[1].iou, 1 / 2)
  close(m.perClass[2].iou, 0)
  expect(m.perClass[3]).toEqual({ iou: null, accuracy: null, support: 0 })
  close(m.mIoU, (1 / 3 + 1 / 2) / 3)
  close(m.pixelAccuracy, 3 / 7)
  close(m.meanAccuracy, (1 / 2 + 2 / 3) / 3)
  close(m.frequencyWeightedIoU, 13 / 42)
  expect(m.pixels).toBe(7)
})

test('accumulates over images', () => {
  const a = new ConfusionMatrix(2).add([0, 1], [0, 0]).add([1, 1], [1, 1]).metrics()
  expect(a.perClass.map((c) => c.iou)).toEqual([1 / 2, 2 / 3])
  expect(a.pixelAccuracy).toBe(3 / 4)
})

test('bad input is a coded error', () => {
  expect(codeOf(() => new ConfusionMatrix(0))).toBe('INVALID_ARGUMENT')
  expect(codeOf(() => new ConfusionMatrix(2).add([0], [0, 1]))).toBe('INVALID_ARGUMENT')
  expect(codeOf(() => new ConfusionMatrix(2).add([0], [7]))).toBe('INVALID_ARGUMENT')
  expect(codeOf(() => new ConfusionMatrix(2).add('01' as never, [0, 1]))).toBe('INVALID_ARGUMENT')
})
