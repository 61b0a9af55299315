//! An ONNX graph in a session, checked against the contract the manifest promises.

use std::path::Path;
use std::sync::Mutex;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputs};
use ort::value::{TensorElementType, ValueType};

use crate::error::{bail, Error, ErrorCode, Result};
use crate::runtime::{apply_provider, ExecutionProvider, ProviderChoice};

/// One expected input or output: name, element type, dims (`None` = must be dynamic: the batch).
pub struct Port {
    pub name: &'static str,
    pub ty: TensorElementType,
    pub dims: Vec<Option<usize>>,
}

pub struct Graph {
    /// `Session::run` needs `&mut`: one run at a time per graph.
    session: Mutex<Session>,
    pub provider: ProviderChoice,
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
        if !path.is_file() {
            bail!(ModelNotFound, "graph {} does not exist", path.display());
        }
        let context = path.display().to_string();
        let session_error =
            |e: ort::Error| Error::new(ErrorCode::InferenceFailed, format!("{context}: {e}"));
        let mut builder = Session::builder(&crate::runtime::environment()?)
            .map_err(session_error)?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| session_error(e.into()))?;
        if let Some(threads) = options.threads {
            builder = builder.with_intra_threads(threads).map_err(|e| {
                Error::new(
                    ErrorCode::InvalidArgument,
                    format!("threads = {threads}: {e}"),
                )
            })?;
        }
        let provider = apply_provider(&mut builder, options.provider)?;
        let session = builder.commit_from_file(path).map_err(|e| {
            Error::new(
                ErrorCode::GraphMismatch,
                format!("{context} is not a loadable ONNX graph: {e}"),
            )
        })?;
        check_ports(
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
        })
    }

    /// Runs the graph and returns its first output as a flat f32 vector.
    pub fn run_f32<'i, 'v: 'i, const N: usize>(
        &self,
        inputs: impl Into<SessionInputs<'i, 'v, N>>,
    ) -> Result<Vec<f32>> {
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session
            .run(inputs)
            .map_err(|e| Error::new(ErrorCode::InferenceFailed, e.to_string()))?;
        let (_, data) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::new(ErrorCode::InferenceFailed, e.to_string()))?;
        Ok(data.to_vec())
    }
}

fn check_ports<'a>(
    context: &str,
    kind: &str,
    actual: impl Iterator<Item = (&'a str, &'a ValueType)>,
    expected: &[Port],
) -> Result<()> {
    let actual: Vec<_> = actual.collect();
    let names: Vec<&str> = actual.iter().map(|(n, _)| *n).collect();
    let wanted: Vec<&str> = expected.iter().map(|p| p.name).collect();
    if names != wanted {
        bail!(
            GraphMismatch,
            "{context}: {kind}s are {names:?}, the manifest's model format needs {wanted:?}"
        );
    }
    for ((name, ty), port) in actual.iter().zip(expected) {
        let (Some(elem), Some(shape)) = (ty.tensor_type(), ty.tensor_shape()) else {
            bail!(GraphMismatch, "{context}: {kind} {name} is not a tensor");
        };
        let dims: Vec<i64> = shape.iter().copied().collect();
        let shape_ok = dims.len() == port.dims.len()
            && dims.iter().zip(&port.dims).all(|(&d, want)| match want {
                Some(n) => d == *n as i64,
                None => d < 0, // the batch must be dynamic
            });
        if elem != port.ty || !shape_ok {
            let want: Vec<String> = port
                .dims
                .iter()
                .map(|d| d.map_or("batch".into(), |n| n.to_string()))
                .collect();
            bail!(
                GraphMismatch,
                "{context}: {kind} {name} is {elem:?} {dims:?}, the manifest implies {:?} [{}]",
                port.ty,
                want.join(", ")
            );
        }
    }
    Ok(())
}
