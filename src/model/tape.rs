//! What a training forward records for the backward: every intermediate activation in one
//! list, and each step naming its input and output by index there, so skip connections are just
//! indices and gradients accumulate per index as the steps are replayed in reverse.

use super::blocks::{AttentionBlock, AttentionSaved, ResnetBlock, ResnetSaved, TimeEmbeddingSaved};
use super::weights::Pair;
use crate::shapes::{Conv2dShape, GroupNormShape, ImageShape};

/// One recorded forward step.
pub(super) enum Step<Buf, In> {
    /// A convolution; `input` None is the model input, `output` the tape's length the model output.
    Conv {
        p: Pair,
        shape: Conv2dShape,
        input: Option<usize>,
        output: usize,
    },
    Resnet {
        block: ResnetBlock,
        shape: ImageShape,
        input: usize,
        output: usize,
        saved: ResnetSaved<Buf, In>,
    },
    Attention {
        block: AttentionBlock,
        shape: ImageShape,
        input: usize,
        output: usize,
        saved: AttentionSaved<Buf, In>,
    },
    Concat {
        a: usize,
        b: usize,
        rows: usize,
        c1: usize,
        c2: usize,
        output: usize,
    },
    /// An up stage's upsampler: nearest 2x upsampling of `shape`, then the convolution `conv`
    /// (parameters `p`) from `up`, the upsampled image as the convolution reads it.
    Upsampler {
        p: Pair,
        shape: ImageShape,
        conv: Conv2dShape,
        input: usize,
        output: usize,
        up: In,
    },
    NormSilu {
        p: Pair,
        shape: GroupNormShape,
        input: usize,
        output: usize,
        stats: [Buf; 2],
    },
}

impl<Buf, In> Step<Buf, In> {
    /// The activation the step wrote.
    pub(super) fn output(&self) -> usize {
        match self {
            Step::Conv { output, .. }
            | Step::Resnet { output, .. }
            | Step::Attention { output, .. }
            | Step::Concat { output, .. }
            | Step::Upsampler { output, .. }
            | Step::NormSilu { output, .. } => *output,
        }
    }
}

/// What a training forward keeps for the backward; `In` is the backend's `Stream::Operand`.
pub struct Tape<Buf, In = Buf> {
    pub(super) batch: usize,
    /// False for inference: steps (and what they saved for the backward) are dropped as they go.
    pub(super) record: bool,
    /// 2x - 1 when center_input_sample (else conv_in reads the caller's x).
    pub(super) centred: Option<Buf>,
    /// Every activation but the output, as the backend stores the residual stream
    /// (`Stream::Operand`: bf16 on CUDA at `--precision bf16`). Index `acts.len()` names the output.
    pub(super) acts: Vec<In>,
    /// The model's output, f32 in every precision (the loss reads it); set when the forward ends.
    pub(super) out: Option<Buf>,
    pub(super) steps: Vec<Step<Buf, In>>,
    pub(super) time: TimeEmbeddingSaved<Buf, In>,
}

impl<Buf, In> Tape<Buf, In> {
    /// The model's output (predicted noise), NHWC.
    pub fn output(&self) -> &Buf {
        self.out.as_ref().expect("a forward records its output")
    }
}
