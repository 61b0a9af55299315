//! An ONNX graph in a session, checked against the contract the manifest promises.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputs};
use ort::value::{TensorElementType, ValueType};

use crate::cancel;
use crate::error::{bail, Error, ErrorCode, Result};
use crate::runtime::{apply_provider, ExecutionProvider, ProviderChoice};

/// One expected input or output: name, element type, dims.
pub struct Port {
    pub name: &'static str,
    pub ty: TensorElementType,
    pub dims: Vec<Dim>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    /// Must be dynamic in the graph (the batch; an image's height and width).
    Dynamic,
    /// Fixed or dynamic (read from the output at run time).
    Any,
    /// This size, or dynamic (a graph may run shorter inputs, e.g. text at its longest token).
    FixedOrDynamic(usize),
}

/// A graph's outputs as f32 tensors, and the time spent inside `Session::run`.
pub struct RunOutput {
    pub tensors: Vec<(Vec<usize>, Vec<f32>)>,
    pub session_ms: f64,
}

pub struct Graph {
    /// `Session::run` needs `&mut`: one run at a time per graph.
    session: Mutex<Session>,
    pub provider: ProviderChoice,
    /// The file name, for messages.
    name: String,
    /// Each input's dims as the graph declares them (-1: dynamic).
    input_dims: Vec<Vec<i64>>,
}

#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    pub provider: ExecutionProvider,
    /// Intra-op threads; `None` = ONNX Runtime's default (one per physical core).
    pub threads: Option<usize>,
}

impl Graph {
    pub fn load(
        path: &Path,
        options: SessionOptions,
        inputs: &[Port],
        outputs: &[Port],
    ) -> Result<Self> {
        // A model load cancelled by its AbortSignal stops before the next graph.
        cancel::check()?;
        crate::files::checked_size(
            path,
            crate::files::GRAPH_MAX_BYTES,
            "graph",
            ErrorCode::GraphMismatch,
        )?;
        let context = path.display().to_string();
        let session_error = |e: ort::Error| {
            Error::caused_by(ErrorCode::InferenceFailed, format!("{context}: {e}"), e)
        };
        let mut builder = Session::builder(&crate::runtime::environment()?)
            .map_err(session_error)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| session_error(e.into()))?;
        if let Some(threads) = options.threads {
            builder = builder.with_intra_threads(threads).map_err(|e| {
                Error::caused_by(
                    ErrorCode::InvalidArgument,
                    format!("threads = {threads}: {e}"),
                    ort::Error::<()>::from(e),
                )
            })?;
        }
        let provider = apply_provider(&mut builder, options.provider)?;
        let session = builder.commit_from_file(path).map_err(|e| {
            Error::caused_by(
                ErrorCode::GraphMismatch,
                format!("{context} is not a loadable ONNX graph: {e}"),
                e,
            )
        })?;
        let input_dims = check_ports(
            &context,
            "input",
            session.inputs().iter().map(|o| (o.name(), o.dtype())),
            inputs,
        )?;
        check_ports(
            &context,
            "output",
            session.outputs().iter().map(|o| (o.name(), o.dtype())),
            outputs,
        )?;
        Ok(Self {
            session: Mutex::new(session),
            provider,
            name: path
                .file_name()
                .map_or(context.clone(), |n| n.to_string_lossy().into_owned()),
            input_dims,
        })
    }

    /// Whether dim `dim` of input `input` is dynamic in the graph.
    pub fn input_is_dynamic(&self, input: usize, dim: usize) -> bool {
        self.input_dims[input][dim] < 0
    }

    /// Runs the graph; every output as a flat f32 tensor with its shape.
    pub fn run<'i, 'v: 'i, const N: usize>(
        &self,
        inputs: impl Into<SessionInputs<'i, 'v, N>>,
    ) -> Result<RunOutput> {
        let mut session = crate::lock(&self.session);
        let run_options = cancel::run_options()?;
        let start = Instant::now();
        let outputs = match &run_options {
            Some(options) => session.run_with_options(inputs, options),
            None => session.run(inputs),
        }
        .map_err(|e| cancel::map_run_error(e.into()))?;
        let session_ms = start.elapsed().as_secs_f64() * 1e3;
        let tensors = outputs
            .values()
            .map(|value| {
                let (shape, data) = value.try_extract_tensor::<f32>()?;
                // Inputs out of the range a model handles give NaN or infinity, never an error.
                if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                    bail!(
                        InferenceFailed,
                        "{} produced a non-finite value ({}) at index {i}: the inputs are outside the range the model handles",
                        self.name,
                        data[i]
                    );
                }
                let shape = shape.iter().map(|&d| d.max(0) as usize).collect();
                Ok((shape, data.to_vec()))
            })
            .collect::<Result<_>>()?;
        Ok(RunOutput {
            tensors,
            session_ms,
        })
    }
}

fn check_ports<'a>(
    context: &str,
    kind: &str,
    actual: impl Iterator<Item = (&'a str, &'a ValueType)>,
    expected: &[Port],
) -> Result<Vec<Vec<i64>>> {
    let actual: Vec<_> = actual.collect();
    let names: Vec<&str> = actual.iter().map(|(n, _)| *n).collect();
    let wanted: Vec<&str> = expected.iter().map(|p| p.name).collect();
    if names != wanted {
        bail!(
            GraphMismatch,
            "{context}: {kind}s are {names:?}, the manifest's model format needs {wanted:?}"
        );
    }
    let mut all_dims = Vec::with_capacity(expected.len());
    for ((name, ty), port) in actual.iter().zip(expected) {
        let (Some(elem), Some(shape)) = (ty.tensor_type(), ty.tensor_shape()) else {
            bail!(GraphMismatch, "{context}: {kind} {name} is not a tensor");
        };
        let dims: Vec<i64> = shape.iter().copied().collect();
        let shape_ok = dims.len() == port.dims.len()
            && dims.iter().zip(&port.dims).all(|(&d, want)| match want {
                Dim::Fixed(n) => d == *n as i64,
                Dim::Dynamic => d < 0,
                Dim::Any => true,
                Dim::FixedOrDynamic(n) => d < 0 || d == *n as i64,
            });
        if elem != port.ty || !shape_ok {
            let want: Vec<String> = port
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => n.to_string(),
                    Dim::Dynamic => "dynamic".into(),
                    Dim::Any => "any".into(),
                    Dim::FixedOrDynamic(n) => format!("{n} or dynamic"),
                })
                .collect();
            bail!(
                GraphMismatch,
                "{context}: {kind} {name} is {elem:?} {dims:?}, the manifest implies {:?} [{}]",
                port.ty,
                want.join(", ")
            );
        }
        all_dims.push(dims);
    }
    Ok(all_dims)
}
