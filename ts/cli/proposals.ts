/** The command line's proposal sources: `--proposals generator|sam|generator,sam` and `--sam-model DIR`. */
import { OvsegError } from '../errors'
import type { Model } from '../model'
import { checkSamOptions, loadSamModel, type SamModel } from '../sam'
import type { SegmentOptions } from '../segment'

export interface ProposalFlags {
  proposals: string
  samModel?: string
  samPoints?: number
  samMaxMasks?: number
  samCropLayers?: number
  samMinRegionArea?: number
  provider: 'cpu' | 'cuda' | 'auto'
  threads?: number
}

/** What `segment()` gets from the flags, and the SAM model to dispose of at the end. */
export interface Proposals {
  options: Pick<SegmentOptions, 'generator' | 'sam' | 'samOptions'>
  sam: SamModel | undefined
}

/** Checks the flags against the model (before any image is read) and loads the SAM model when asked. */
export async function openProposals(flags: ProposalFlags, model: Model): Promise<Proposals> {
  const sources = flags.proposals.split(',').map((s) => s.trim())
  const unknown = sources.filter((s) => s !== 'generator' && s !== 'sam')
  if (unknown.length > 0 || sources.length === 0) throw new OvsegError('INVALID_ARGUMENT', `--proposals takes generator, sam or generator,sam, not ${JSON.stringify(flags.proposals)}`)
  const generator = sources.includes('generator')
  const useSam = sources.includes('sam')
  if (useSam !== (flags.samModel !== undefined)) {
    throw new OvsegError('INVALID_ARGUMENT', useSam ? '--proposals sam needs --sam-model DIR (a SAM directory: python -m ovseg_tools.export.sam)' : '--sam-model is given but --proposals does not include sam')
  }
  if (generator && !model.manifest.generator) {
    throw new OvsegError('INVALID_ARGUMENT', `the model ${model.manifest.name} has no mask generator: use --proposals sam with --sam-model DIR`)
  }
  if (!useSam) return { options: { generator }, sam: undefined }
  const samOptions = {
    ...(flags.samPoints !== undefined ? { pointsPerSide: flags.samPoints } : {}),
    ...(flags.samMaxMasks !== undefined ? { maxMasks: flags.samMaxMasks } : {}),
    ...(flags.samCropLayers !== undefined ? { cropNLayers: flags.samCropLayers } : {}),
    ...(flags.samMinRegionArea !== undefined ? { minMaskRegionArea: flags.samMinRegionArea } : {}),
  }
  checkSamOptions(samOptions) // before the model loads
  const sam = await loadSamModel(flags.samModel as string, { executionProvider: flags.provider, threads: flags.threads })
  return { options: { generator, sam, samOptions }, sam }
}
