//! The pipeline's error kinds, classified by who caused them (mapped to HTTP in `crate::error`).

/// Why a render failed, classified by who caused it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PipelineError {
    /// The bytes are not a format this node decodes.
    #[error("unsupported image format")]
    UnsupportedFormat,
    /// The source declares more pixels (or bytes, or frames) than the limits allow.
    #[error("source image too large: {0}")]
    SourceTooLarge(String),
    /// The requested output is over the output limits.
    #[error("output too large: {0}")]
    OutputTooLarge(String),
    /// The bytes are damaged or truncated.
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// The request asks for something this source does not have (`frame=N` past its last
    /// frame); names the parameter.
    #[error("{0}")]
    BadRequest(String),
    /// An animation render passed its deadline between two frames (`cpu.transform_timeout`).
    #[error("render deadline passed after {0} frames")]
    Deadline(u32),
    /// A bug or an encoder failure; never the client's fault.
    #[error("internal pipeline error: {0}")]
    Internal(String),
}
